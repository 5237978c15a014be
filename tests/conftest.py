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


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """Every dataset's archives in the official formats, written once per test session."""
    from emanet.data.synthetic.archives import synthesize

    out = tmp_path_factory.mktemp("synth")
    synthesize(out, images_per_split=6, seed=0)
    return out


@pytest.fixture
def raw_dir(tmp_path, synth_dir) -> Path:
    """A fresh raw folder holding the synthetic archives, as `emanet download` leaves it."""
    import shutil

    raw = tmp_path / "raw"
    raw.mkdir()
    for path in synth_dir.iterdir():
        if path.is_file() and path.name != "manifest.json":
            shutil.copy(path, raw / path.name)
    return raw


@pytest.fixture(scope="session")
def prepared_root(tmp_path_factory, synth_dir) -> Path:
    """The synthetic VOC prepared once per session; pass ``--set data.root=<this>`` to runs."""
    import shutil

    from emanet.data.convert.prepare import prepare

    raw = tmp_path_factory.mktemp("raw_voc")
    for name in ("VOCtrainval_11-May-2012.tar", "benchmark.tgz"):
        shutil.copy(synth_dir / name, raw / name)
    out = tmp_path_factory.mktemp("prepared")
    prepare("voc", raw, out, None, progress=False)
    return out


try:  # hypothesis budgets for tests/test_fuzz_readers.py: `make test` runs "fast", `make fuzz` runs "fuzz"
    from hypothesis import HealthCheck, settings
except ImportError:  # the dev extra is not installed: the fuzz tests fail to import, nothing else needs it
    pass
else:
    import os

    # Each example rewrites the same file in the test's tmp_path, so a function-scoped fixture is fine.
    _relaxed = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile(
        "fast",
        max_examples=50,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=_relaxed,
    )
    settings.register_profile(
        "fuzz",
        max_examples=int(os.environ.get("FUZZ_EXAMPLES", 10_000)),
        deadline=None,
        print_blob=True,
        suppress_health_check=_relaxed,
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))
