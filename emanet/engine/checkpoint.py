"""Atomic, complete checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the model, optimiser and AMP scaler states, the iteration, and every RNG state
(torch CPU and CUDA, NumPy, Python). The data order needs no state of its own: it is a function of
(seed, iteration) (see :mod:`emanet.engine.sampler`). Files are written to a temporary name and
renamed, so a kill during the save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emanet.io import atomic_write_bytes


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


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save` (it holds RNG states, so not weights-only)."""
    return torch.load(path, map_location="cpu", weights_only=False)
