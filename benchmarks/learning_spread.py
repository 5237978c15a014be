"""How far tiny CPU training moves with the seed, the thread count and the CPU's vector kernels.

Run by hand: ``.venv/bin/python benchmarks/learning_spread.py [--seeds 66,1,2,3,4] [--iterations 400]
[--configs 1:avx512,2:avx512,1:avx2,1:sse]``. About 40 s per run on one free core.

It trains ``ema512`` on the tiny profile (the synthetic VOC that the tests use: 6 images per split)
once per seed and configuration, scores the training images (``trainaug``) and ``val``, and prints
each run's mIoU, then min / max / mean / standard deviation per split and the margins of the
thresholds of ``tests/test_engine.py::test_training_learns_well_beyond_the_trivial_miou``. Rerun it
whenever the tiny recipe or the model changes, and set those thresholds from its output.

A configuration is ``THREADS:KERNELS``. THREADS sets ``train.cpu_threads``; KERNELS caps the vector
instructions oneDNN, ATen and MKL may use (``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``,
``MKL_ENABLE_INSTRUCTIONS``), which reproduces the arithmetic of an older CPU on a newer one:
``avx512`` (no cap), ``avx2`` or ``sse``. Training on a CPU is deterministic for one configuration
but chaotic across them: any of these changes acts like another seed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KERNELS = {
    "avx512": {},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "sse": {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}
#: the test's thresholds, in multiples of the trivial mIoU (most frequent class everywhere)
THRESHOLDS = {"trainaug": 10.0, "val": 1.0}


def trivial_miou(matrix: np.ndarray) -> float:
    """mIoU of predicting the most frequent ground-truth class everywhere (rows = ground truth)."""
    gt = np.asarray(matrix, dtype=np.float64).sum(1)
    return float(gt.max() / gt.sum() / np.count_nonzero(gt))


def prepare_data(work: Path) -> Path:
    """The synthetic VOC of the test suite (tests/conftest.py: 6 images per split, seed 0), prepared."""
    from emanet.data.convert.prepare import prepare
    from emanet.data.synthetic.archives import synthesize

    synth, raw = work / "synth", work / "raw"
    synthesize(synth, images_per_split=6, seed=0)
    raw.mkdir()
    for name in ("VOCtrainval_11-May-2012.tar", "benchmark.tgz"):
        shutil.copy(synth / name, raw / name)
    prepare("voc", raw, work / "prepared", None, progress=False)
    return work / "prepared"


def run(work: Path, data: Path, seed: int, threads: int, kernels: str, iterations: int) -> dict:
    """Train and score one configuration; returns {split: (miou, trivial)} and the final logged loss."""
    out = work / f"run_{seed}_{threads}_{kernels}"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), **KERNELS[kernels])
    env.pop("MLFLOW_TRACKING_URI", None)
    sets = [
        f"data.root={data}",
        "tracking.enabled=false",
        f"train.seed={seed}",
        f"train.cpu_threads={threads}",
        f"train.iterations={iterations}",
        f"train.checkpoint_interval={iterations}",
    ]
    args = ["--experiment", "ema512", "--profile", "tiny", "--out", str(out)]
    for item in sets:
        args += ["--set", item]
    result = {"seed": seed, "threads": threads, "kernels": kernels}
    commands = [["train"], ["evaluate", "--split", "trainaug"], ["evaluate", "--split", "val"]]
    for command in commands:
        proc = subprocess.run(
            [sys.executable, "-m", "emanet.cli", command[0], *args, *command[1:]],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode:
            raise RuntimeError(
                f"{' '.join(command)} failed for seed {seed}, {threads}:{kernels}:\n{proc.stderr[-3000:]}"
            )
        if command[0] == "evaluate":
            metrics = json.loads((out / "runs/ema512/metrics.json").read_text())
            result[command[-1]] = (metrics["miou"], trivial_miou(metrics["confusion_matrix"]))
    shutil.rmtree(out)
    return result


def summarize(results: list[dict]) -> None:
    for split, factor in THRESHOLDS.items():
        values = [100 * r[split][0] for r in results]
        trivial = 100 * results[0][split][1]
        threshold = factor * trivial
        line = (
            f"{split}: n={len(values)} min {min(values):.2f} max {max(values):.2f} mean {statistics.mean(values):.2f}"
            f" range {max(values) - min(values):.2f}"
        )
        if len(values) > 1:
            sd = statistics.stdev(values)
            line += (
                f" sd {sd:.2f}; trivial {trivial:.2f}, threshold {factor:g}x = {threshold:.2f}: lowest run "
                f"{min(values) - threshold:.1f} points above it ({(min(values) - threshold) / sd:.1f} sd, "
                f"{(min(values) - threshold) / max(max(values) - min(values), 1e-9):.1f}x the range)"
            )
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="66,1,2,3,4", help="train.seed values (default 66,1,2,3,4)")
    parser.add_argument(
        "--configs",
        default="1:avx512,2:avx512,1:avx2,1:sse",
        help=f"THREADS:KERNELS, kernels one of {', '.join(KERNELS)}",
    )
    parser.add_argument("--iterations", type=int, default=400, help="training iterations (the test's: 400)")
    args = parser.parse_args()
    configs = []
    for item in args.configs.split(","):
        threads, _, kernels = item.partition(":")
        if kernels not in KERNELS or not threads.isdigit():
            parser.error(f"--configs: {item!r} is not THREADS:KERNELS with KERNELS one of {', '.join(KERNELS)}")
        configs.append((int(threads), kernels))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = prepare_data(work)
        results = []
        for threads, kernels in configs:
            for seed in (int(s) for s in args.seeds.split(",")):
                result = run(work, data, seed, threads, kernels, args.iterations)
                results.append(result)
                print(
                    f"seed {seed:>3} threads {threads} {kernels:>6}: trainaug mIoU {100 * result['trainaug'][0]:.2f}"
                    f"  val mIoU {100 * result['val'][0]:.2f}",
                    flush=True,
                )
    summarize(results)


if __name__ == "__main__":
    main()
