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


#: CPU floating-point results depend on the thread count, so every subprocess a test compares runs with one
#: thread whatever the host's OMP_NUM_THREADS (the tiny profile's train.cpu_threads also pins torch's).
THREADS = "1"


def cli_env(env: dict | None = None) -> dict[str, str]:
    """The environment of an `emanet` subprocess: one thread, no tracking URI unless ``env`` gives them."""
    full_env = dict(os.environ, OMP_NUM_THREADS=THREADS, MKL_NUM_THREADS=THREADS)
    full_env.update(env or {})
    if "MLFLOW_TRACKING_URI" not in (env or {}):
        full_env.pop("MLFLOW_TRACKING_URI", None)
    return full_env


def emanet(
    args: list[str], nproc: int = 1, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`emanet ARGS` (under torchrun when nproc > 1), one thread per process, no tracking URI unless given."""
    launcher = [sys.executable] if nproc == 1 else torchrun(nproc)
    return subprocess.run(
        [*launcher, "-m", "emanet.cli", *args],
        cwd=ROOT,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_worker(script: str, out: Path, nproc: int = 2) -> None:
    """Run tests/helpers/<script> under torchrun (gloo, one thread per rank) with ``out`` as its argument."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=THREADS, MKL_NUM_THREADS=THREADS)
    proc = subprocess.run(
        [*torchrun(nproc), str(ROOT / "tests/helpers" / script), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def run_args(command: str, out: Path, data_root: Path, *sets: str, experiment: str = "ema512") -> list[str]:
    args = [
        command,
        "--experiment",
        experiment,
        "--profile",
        "tiny",
        "--out",
        str(out),
        "--set",
        f"data.root={data_root}",
        "--set",
        "tracking.enabled=false",
    ]
    for item in sets:
        args += ["--set", item]
    return args


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=True)
