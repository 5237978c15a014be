"""Typed model settings for tests that build a unit, a head or a backbone on its own: params.yaml's own
``model`` section (the paper profile: the official recipe) with a test's changes, so no test repeats a
default of params.yaml."""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path

from emanet.config import EMAConfig, ModelConfig, load_params, resolve

ROOT = Path(__file__).resolve().parents[2]


@cache
def _paper_model() -> ModelConfig:
    return dataclasses.replace(resolve(load_params(ROOT / "params.yaml"), "paper").model, pretrained=None)


def model_config(**changes) -> ModelConfig:
    """params.yaml's ``model`` in the paper profile, without ImageNet weights, with ``changes``."""
    return dataclasses.replace(_paper_model(), **changes)


def ema_config(**changes) -> EMAConfig:
    """params.yaml's ``model.ema`` in the paper profile (the official unit), with ``changes``."""
    return dataclasses.replace(_paper_model().ema, **changes)


def bn_momentum() -> float:
    """params.yaml's ``model.bn_momentum`` in the paper profile (the official 3e-4)."""
    return _paper_model().bn_momentum
