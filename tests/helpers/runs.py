"""Run `emanet` commands as users do (a subprocess, optionally under torchrun) on the tiny profile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def torchrun(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone"]


def emanet(args: list[str], nproc: int = 1, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`emanet ARGS` (under torchrun when nproc > 1), one thread per process, no tracking URI unless given."""
    launcher = [sys.executable] if nproc == 1 else torchrun(nproc)
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("OMP_NUM_THREADS", "1")
    if "MLFLOW_TRACKING_URI" not in (env or {}):
        full_env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([*launcher, "-m", "emanet.cli", *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def run_worker(script: str, out: Path, nproc: int = 2) -> None:
    """Run tests/helpers/<script> under torchrun (gloo, one thread per rank) with ``out`` as its argument."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([*torchrun(nproc), str(ROOT / "tests/helpers" / script), str(out)], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]


def run_args(command: str, out: Path, data_root: Path, *sets: str, experiment: str = "ema512") -> list[str]:
    args = [command, "--experiment", experiment, "--profile", "tiny", "--out", str(out),
            "--set", f"data.root={data_root}", "--set", "tracking.enabled=false"]
    for item in sets:
        args += ["--set", item]
    return args


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=True)
