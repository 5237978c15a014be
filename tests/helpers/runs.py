"""Run `emanet` commands as users do (a subprocess, optionally under torchrun) on the tiny profile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def emanet(args: list[str], nproc: int = 1, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "emanet.cli"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone", "-m", "emanet.cli"]
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env.pop("MLFLOW_TRACKING_URI", None) if env is None or "MLFLOW_TRACKING_URI" not in env else None
    return subprocess.run([*launcher, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def run_args(command: str, out: Path, data_root: Path, *sets: str, experiment: str = "ema512") -> list[str]:
    args = [command, "--experiment", experiment, "--profile", "tiny", "--out", str(out),
            "--set", f"data.root={data_root}", "--set", "tracking.enabled=false"]
    for item in sets:
        args += ["--set", item]
    return args


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=True)
