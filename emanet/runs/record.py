"""What ``run.json`` records about when and where a run's stages ran (see docs/run-folder.md).

``environment(device)`` is the machine and software of a stage: host name, OS, Python, torch, the CUDA
and cuDNN versions torch was built with (None on a CPU build) and, on CUDA, the GPU's name and count.
Training keeps ``train``: ``started`` (first start), ``finished`` (None until the final weights are
written) and ``sessions``, one per start or resume, each with its start, end, first iteration and
environment. Each evaluation protocol keeps ``evaluations.<protocol>`` with its start, end and
environment (the protocols of one ``emanet evaluate`` share one pass, so one start and end), and what
determined its numbers (:func:`emanet.runs.folder.evaluation_record`).
Times are ISO 8601 in UTC, to the second.
"""

from __future__ import annotations

import datetime
import platform
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emanet.runs.folder import RUN_INFO, write_info

if TYPE_CHECKING:
    import torch

RUN_FOLDER_DOC = "docs/run-folder.md"  # in the emanet repository: what each file of a run folder is


def now() -> str:
    """The current time, ISO 8601 in UTC to the second (``2026-11-30T15:58:03+00:00``)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def environment(device: torch.device | None = None) -> dict[str, Any]:
    """Host, OS, Python, torch, CUDA/cuDNN build versions and, for a CUDA ``device``, the GPU's name."""
    import torch

    cuda = device is not None and device.type == "cuda"
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
    }


def train_started(info: dict[str, Any], from_iteration: int, device: torch.device) -> dict[str, Any]:
    """``info`` (run.json's dict) with a new training session opened at ``from_iteration``."""
    train = dict(info.get("train") or {})
    stamp = now()
    train.setdefault("started", stamp)
    train["finished"] = None
    train["sessions"] = [
        *train.get("sessions", []),
        {"started": stamp, "finished": None, "from_iteration": from_iteration, "environment": environment(device)},
    ]
    return {**info, "train": train, "readme": RUN_FOLDER_DOC}


def train_finished(run_dir: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Close the last training session and the training in ``run_dir/run.json``; return the new dict."""
    train = dict(info.get("train") or {})
    stamp = now()
    train["finished"] = stamp
    if train.get("sessions"):
        train["sessions"] = [*train["sessions"][:-1], {**train["sessions"][-1], "finished": stamp}]
    info = {**info, "train": train}
    write_info(run_dir, info)
    return info


def record_evaluation(
    run_dir: Path, info: dict[str, Any], records: dict[str, dict[str, Any]], started: str, device: torch.device
) -> dict[str, Any]:
    """Write ``evaluations.<protocol>`` for each protocol of ``records`` (evaluated in one pass:
    ``started``, now as ``finished``, the environment, and the protocol's record of
    :func:`emanet.runs.folder.evaluation_record`) into ``run_dir/run.json``; return the new dict. A folder
    without a run.json (weights placed there by hand) gets none."""
    if not (run_dir / RUN_INFO).is_file():
        return info
    done = {"started": started, "finished": now(), "environment": environment(device)}
    evaluations = {**(info.get("evaluations") or {}), **{p: {**done, **r} for p, r in records.items()}}
    info = {**info, "evaluations": evaluations, "readme": RUN_FOLDER_DOC}
    write_info(run_dir, info)
    return info
