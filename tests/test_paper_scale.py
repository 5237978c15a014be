"""The paper profile's ema512 at full size on a CPU: ResNet-101 (deep stem), output stride 8, crop 513.

Two training iterations at batch 1 through `emanet train` and one single-scale `emanet evaluate` of a
500x375 image, as subprocesses (as users run them), with the paper profile's code path unchanged except
the batch (1), the iterations (2), no ImageNet download (``model.pretrained=null``) and no tracking. Each
command's peak resident memory and time are printed (``pytest -s``) for the README.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.helpers.runs import ROOT, cli_env

SETS = (
    "model.pretrained=null",
    "train.batch_size=1",
    "train.iterations=2",
    "train.checkpoint_interval=2",
    "train.log_interval=1",
    "train.device=cpu",
    "data.workers=0",
    "tracking.enabled=false",
)


def _val_500x375(root):
    """A split ``val500`` of one 500x375 image (and its label), made from the prepared val split's first."""
    voc = root / "voc"
    first = (voc / "splits/val.txt").read_text().split()[0]
    with Image.open(voc / "images" / f"{first}.jpg") as im:
        image = im.convert("RGB").resize((500, 375), Image.BILINEAR)
    with Image.open(voc / "labels" / f"{first}.png") as lab:
        label = lab.resize((500, 375), Image.NEAREST)
        assert set(np.unique(np.array(label))) <= {*range(21), 255}
    image.save(voc / "images/big_000001.jpg", quality=95)
    label.save(voc / "labels/big_000001.png")
    (voc / "splits/val500.txt").write_text("big_000001\n")


#: Runs one command and prints its own peak resident set (KiB on Linux) last on stderr.
_PEAK = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"
)


def _timed(args: list[str]) -> tuple[float, float]:
    """(seconds, peak resident GiB) of one `emanet` subprocess."""
    began = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, sys.executable, "-m", "emanet.cli", *args],
        cwd=ROOT,
        env=cli_env({"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}),
        capture_output=True,
        text=True,
        timeout=3600,
    )
    seconds = time.perf_counter() - began
    assert proc.returncode == 0, proc.stderr[-4000:]
    return seconds, int(proc.stderr.split()[-1]) / 2**20  # KiB -> GiB


@pytest.mark.slow
def test_paper_ema512_trains_and_evaluates_at_full_size_on_cpu(tmp_path, prepared_root):
    root = tmp_path / "prepared"
    shutil.copytree(prepared_root, root, symlinks=True)
    _val_500x375(root)
    common = [
        "--experiment",
        "ema512",
        "--profile",
        "paper",
        "--out",
        str(tmp_path / "results"),
        "--set",
        f"data.root={root}",
    ] + [a for s in SETS for a in ("--set", s)]
    train_s, train_gib = _timed(["train", *common])
    run = tmp_path / "results/runs/ema512"
    config = (run / "config.yaml").read_text()
    for line in ("backbone: resnet101", "stem: deep", "output_stride: 8", "crop_size: 513", "head_channels: 512"):
        assert line in config, line
    rows = (run / "train_log.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2"] and all(np.isfinite(float(r.split(",")[1])) for r in rows)
    eval_s, eval_gib = _timed(["evaluate", *common, "--split", "val500"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["images"] == 1 and metrics["split"] == "val500"
    print(
        f"\npaper ema512 on CPU: 2 training iterations at batch 1, crop 513: {train_s:.0f} s, peak RSS "
        f"{train_gib:.2f} GiB; SS evaluation of one 500x375 image: {eval_s:.0f} s, peak RSS {eval_gib:.2f} GiB"
    )
