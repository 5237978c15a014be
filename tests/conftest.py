"""Shared fixtures: the repository root and the tiny model configuration read from params.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emanet.config import load_params, resolve

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def tiny_config():
    return resolve(load_params(ROOT / "params.yaml"), "tiny")
