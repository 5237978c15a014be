"""Snakemake and DVC declare the same stages, and both really run them (in a temporary copy)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent
PIPELINE_FILES = ("Snakefile", "workflow", "dvc.yaml", "params.yaml", "environment.yml", "emanet")


def _run(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@localhost", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@localhost")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture
def workdir(tmp_path, root) -> Path:
    for name in PIPELINE_FILES:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, tmp_path / name)
    return tmp_path


def test_both_orchestrators_declare_the_same_stages(root):
    dvc_stages = set(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])
    rules = _run([str(BIN / "snakemake"), "--list-rules"], root).split()
    assert dvc_stages == set(rules) - {"all"}


def test_snakemake_lint_is_clean(root):
    assert "good condition" in _run([str(BIN / "snakemake"), "--lint"], root)


@pytest.mark.slow
def test_snakemake_and_dvc_produce_the_same_outputs(workdir):
    profile = yaml.safe_load((workdir / "params.yaml").read_text())["profile"]
    out = workdir / "results" / profile / "bench" / "complexity.json"
    _run([str(BIN / "snakemake"), "-c1"], workdir)
    by_snakemake = json.loads(out.read_text())
    assert "Nothing to be done" in _run([str(BIN / "snakemake"), "-c1"], workdir)
    out.unlink()

    _run(["git", "init", "-q"], workdir)
    _run([str(BIN / "dvc"), "init", "-q"], workdir)
    _run([str(BIN / "dvc"), "repro"], workdir)
    assert json.loads(out.read_text()) == by_snakemake
    assert by_snakemake["heads"]["ema512"]["params"] == 9_996_800
    assert "up to date" in _run([str(BIN / "dvc"), "repro"], workdir)
