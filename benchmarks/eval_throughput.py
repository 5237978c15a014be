"""Evaluation images/s before and after the shared-view path, as ratios measured in one run.

Run by hand: ``.venv/bin/python benchmarks/eval_throughput.py [--images 12] [--sizes 80,128]
[--workers 0,1] [--repeats 2]``. About a minute at the defaults on one free core.

It writes a synthetic VOC (``emanet synth`` archives, ``--images`` per split, sides drawn from ``--sizes``:
80..128 is the tiny demo's, 334..500 VOC's), prepares it, saves an untrained model of the tiny profile
(speed does not depend on the weights) and scores the val split with the jobs the demo runs:

- ``ss`` and ``ms_flip`` alone (ema512), ``ss+ms_flip`` (Table 1's evaluate job), and ``fig4``
  (r50: ``ss`` and ``ss_T1``..``ss_T8``, Fig. 4's job, one protocol per T_eval);
- *before*: :mod:`emanet.engine.reference_eval`, the old loop (each protocol a pass over the split, each
  image decoded in the main process, one forward pass per view);
- *after*: :func:`emanet.engine.evaluate.score`, the command's own loop (one pass for all protocols,
  images decoded by ``data.workers`` DataLoader processes, shared forward passes), once per ``--workers``.

Both time the pass over the split only (the model is built once, untimed; no files are written).

Both run on one torch thread (the tiny profile's ``train.cpu_threads``), in the same process, interleaved
``--repeats`` times; each figure is the best of its repeats (the machine is shared). images/s counts
images of the split scored under every protocol of the job (a job of 9 protocols over 12 images scores
12 images). Each job's matrices are checked identical between the two paths.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from emanet.config import load_params, resolve
from emanet.data.convert.prepare import prepare
from emanet.data.loading.dataset import SegmentationDataset
from emanet.data.loading.transforms import EvalTransform
from emanet.data.synthetic.archives import synthesize
from emanet.engine.dist import DistContext
from emanet.engine.evaluate import score
from emanet.engine.inference import SharedViewPredictor
from emanet.engine.reference_eval import reference_matrices
from emanet.models import build_model
from emanet.protocols import Protocol

ROOT = Path(__file__).resolve().parents[1]
FIG4 = ["ss"] + [f"ss_T{t}" for t in range(1, 9)]
CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
JOBS = {
    "ss": ("ema512", ["ss"]),
    "ms_flip": ("ema512", ["ms_flip"]),
    "ss+ms_flip": ("ema512", ["ss", "ms_flip"]),
    "fig4": ("r50", FIG4),
}


def _before(model, root: Path, split: str, protocols: list[str], scales) -> tuple[float, list]:
    dataset = SegmentationDataset(root, split, EvalTransform())
    start = time.perf_counter()
    matrices = reference_matrices(model, dataset, [dataclasses.astuple(Protocol.parse(p)) for p in protocols], scales)
    return time.perf_counter() - start, [m.tolist() for m in matrices]


def _after(model, root: Path, split: str, protocols: list[str], scales, workers: int) -> tuple[float, list]:
    dataset = SegmentationDataset(root, split)
    start = time.perf_counter()
    predictor = SharedViewPredictor(model, [Protocol.parse(p) for p in protocols], scales)
    matrices = score(predictor, dataset, protocols, CPU, workers, f"after, data.workers={workers}")
    return time.perf_counter() - start, [matrices[p].tolist() for p in protocols]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=12, help="images per split of the synthetic VOC")
    parser.add_argument("--sizes", default="80,128", help="min,max image side (80,128 tiny demo; 334,500 VOC)")
    parser.add_argument("--workers", default="0,1", help="data.workers values timed for the new path")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the best of each is shown")
    parser.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated, of {', '.join(JOBS)}")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    sizes = tuple(int(v) for v in args.sizes.split(","))
    workers = [int(v) for v in args.workers.split(",")]
    jobs = args.jobs.split(",")
    if unknown := sorted(set(jobs) - set(JOBS)):
        parser.error(f"--jobs: unknown {', '.join(unknown)} (have {', '.join(JOBS)})")
    torch.set_num_threads(1)
    params = load_params(ROOT / "params.yaml")
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize(tmp / "raw", args.images, seed=0, datasets=["voc"], sizes=sizes)
        prepared = tmp / "prepared"
        prepare("voc", tmp / "raw", prepared, None, progress=False)
        n = len(SegmentationDataset(prepared / "voc", "val"))
        print(
            f"{n} val images, sides {sizes[0]}..{sizes[1]} px, tiny profile models, 1 torch thread, "
            f"best of {args.repeats}"
        )
        for job in jobs:
            experiment, protocols = JOBS[job]
            cfg = resolve(params, "tiny", [f"data.root={prepared}"], experiment)
            torch.manual_seed(0)
            model = build_model(
                dataclasses.replace(cfg.model, output_stride=cfg.eval.output_stride or cfg.model.output_stride), 21
            ).eval()  # as evaluate's
            best: dict[str, float] = {}
            for _ in range(args.repeats):
                seconds, expected = _before(model, prepared / "voc", cfg.eval.split, protocols, cfg.eval.scales)
                best["before"] = min(best.get("before", seconds), seconds)
                for count in workers:
                    seconds, got = _after(model, prepared / "voc", cfg.eval.split, protocols, cfg.eval.scales, count)
                    if got != expected:
                        raise SystemExit(f"{job}: the new path's confusion matrices differ from the reference's")
                    best[f"after_w{count}"] = min(best.get(f"after_w{count}", seconds), seconds)
            rates = {k: n / v for k, v in best.items()}
            figures[job] = {
                "protocols": protocols,
                "images": n,
                "images_per_s": rates,
                "ratio": {k: rates[k] / rates["before"] for k in rates if k != "before"},
            }
            after = ", ".join(
                f"after (data.workers={w}) {rates[f'after_w{w}']:.2f}/s = x{rates[f'after_w{w}'] / rates['before']:.2f}"
                for w in workers
            )
            print(
                f"{job:10s} ({experiment}: {'+'.join(protocols)}): before {rates['before']:.2f} images/s, "
                f"{after}; matrices identical",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
