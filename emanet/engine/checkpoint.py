"""Atomic, complete checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the model, optimiser and AMP scaler states, the iteration, and every RNG state
(torch CPU and CUDA, NumPy, Python). The data order needs no state of its own: it is a function of
(seed, iteration) (see :mod:`emanet.engine.sampler`). Files are written to a temporary name and
renamed, so a kill during the save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import random
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emanet.io import atomic_write_bytes
from emanet.models.weights import torch_load_reason

#: What NumPy's RNG state (``np.random.get_state()``: a uint32 array) pickles as: the only objects a
#: checkpoint holds besides tensors and plain containers, let through ``torch.load(weights_only=True)``.
_NUMPY_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]


#: What ``GradScaler.state_dict()`` holds when AMP is on (it is empty when off).
_SCALER_KEYS = frozenset({"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"})


class CheckpointError(ValueError):
    """A resumable checkpoint that cannot be used; the message names the file, the cause and what to do."""


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, **state: Any) -> Path:
    """A resumable checkpoint (see the module docstring), written atomically."""
    return save_object(path, state)


def save_object(path: Path, obj: Any) -> Path:
    """``torch.save`` into memory, then an atomic write (temp file + fsync + rename)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load(path: Path, model: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`, with ``weights_only=True`` (tensors, plain containers and
    NumPy's RNG-state array: a tampered file cannot run code).

    Returns the dict of :func:`save`: ``model`` and ``optimizer`` state dicts, ``scaler`` (a dict, empty
    when AMP is off), ``iteration`` (int >= 0), ``rng`` (a list of :func:`rng_state` dicts, one per
    process) and ``training_identity`` (the run's training digest). With ``model``, the model state dict
    must have exactly the model's keys and shapes; with ``optimizer``, the optimizer state must have as
    many parameter groups, each with as many parameters, as ``optimizer`` (what
    ``Optimizer.load_state_dict`` would otherwise refuse without naming the file). Raises CheckpointError
    naming the file when it is missing, truncated, corrupt or not
    a PyTorch file, lacks any of those entries or holds one of the wrong type, or does not fit ``model`` or
    ``optimizer``.
    """
    path = Path(path)
    fix = f"delete {path} to restart the run from iteration 0, or put back an intact copy"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5; older: allowed process-wide
    if allow is None:
        torch.serialization.add_safe_globals(_NUMPY_GLOBALS)
    try:
        with allow(_NUMPY_GLOBALS) if allow else nullcontext():
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for truncated, corrupt or unsafe files
        raise CheckpointError(
            f"{path}: not a readable checkpoint, truncated or corrupt ({torch_load_reason(exc)}); {fix}"
        ) from None
    problem = _problem(state, model) or _optimizer_problem(state, optimizer)
    if problem:
        raise CheckpointError(f"{path}: {problem}; {fix}")
    return state


def _problem(state: object, model: nn.Module | None) -> str | None:
    """What makes a loaded checkpoint unusable for resuming ``model``, or None."""
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not the dict of a resumable checkpoint"

    def named_tensors(value: object) -> bool:
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
        )

    def rng_states(value: object) -> bool:
        return (
            isinstance(value, list)
            and len(value) > 0
            and all(isinstance(r, dict) and {"torch", "numpy", "python"} <= set(r) for r in value)
        )

    rules = [
        ("model", named_tensors, "a state dict of tensors"),
        (
            "optimizer",
            lambda v: (
                isinstance(v, dict)
                and isinstance(v.get("state"), dict)
                and isinstance(v.get("param_groups"), list)
                and len(v["param_groups"]) > 0
                and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in v["param_groups"])
            ),
            "an optimizer state dict",
        ),
        (
            "scaler",
            lambda v: isinstance(v, dict) and (not v or _SCALER_KEYS <= set(v)),
            "a GradScaler state dict (empty without AMP)",
        ),
        ("iteration", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a non-negative integer"),
        ("rng", rng_states, "a list of RNG states, one per process"),
    ]
    for key, fits, what in rules:
        if key not in state:
            return f"has no {key!r} entry (not a checkpoint of `emanet train`)"
        if not fits(state[key]):
            return f"its {key!r} entry must be {what}, got a {type(state[key]).__name__}"
    for rank, rng in enumerate(state["rng"]):
        try:  # each on a private generator: the process's own RNGs are untouched
            random.Random().setstate(rng["python"])
            np.random.RandomState().set_state(rng["numpy"])
            torch.Generator().set_state(rng["torch"])
        except Exception as exc:  # noqa: BLE001 - each library raises its own types for a bad state
            return f"the RNG state of process {rank} is damaged ({type(exc).__name__}: {exc})"
    if model is not None:
        ours, theirs = model.state_dict(), state["model"]
        missing, unexpected = [k for k in ours if k not in theirs], [k for k in theirs if k not in ours]
        shapes = [
            f"{k!r} is {tuple(v.shape)} in the checkpoint but {tuple(ours[k].shape)} in the model"
            for k, v in theirs.items()
            if k in ours and v.shape != ours[k].shape
        ]
        if missing or unexpected or shapes:
            return (
                f"its model does not fit the configured one: {len(missing)} entries missing "
                f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, {len(shapes)} of another "
                f"shape{': ' + '; '.join(shapes[:3]) if shapes else ''}"
            )
    return None


def _optimizer_problem(state: dict[str, Any], optimizer: torch.optim.Optimizer | None) -> str | None:
    """How the saved optimizer state differs in layout from ``optimizer`` (groups, parameters per group)."""
    if optimizer is None:
        return None
    saved = [len(group["params"]) for group in state["optimizer"]["param_groups"]]
    ours = [len(group["params"]) for group in optimizer.param_groups]
    if saved != ours:
        return (
            f"its optimizer state has parameter groups of {saved} parameters but the configured optimizer "
            f"has {ours} (the model or train.* parameter groups changed since it was saved)"
        )
    return None
