"""The set-up promises: conda and pip list the same dependencies; the CLI and its help work."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement


def _normalise(spec: str) -> tuple[str, str]:
    req = Requirement(spec)
    return req.name.lower().replace("_", "-"), str(req.specifier)


def test_environment_yml_matches_pyproject(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    pip_specs = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((root / "environment.yml").read_text())
    (pip_section,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    conda_specs = {s for s in pip_section if not s.startswith("-e")}
    assert {_normalise(s) for s in conda_specs} == {_normalise(s) for s in pip_specs}
    assert "python=3.11" in env["dependencies"]


@pytest.mark.parametrize("args", [[], ["bench"], ["bench", "complexity"], ["bench", "latency"]])
def test_help_works_for_every_command(args):
    emanet = Path(sys.executable).parent / "emanet"
    proc = subprocess.run([str(emanet), *args, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: emanet" in proc.stdout


def test_errors_are_reported_without_traceback():
    emanet = Path(sys.executable).parent / "emanet"
    proc = subprocess.run([str(emanet), "bench", "latency", "--batch", "1"], capture_output=True, text=True)
    assert proc.returncode == 2 and "emanet: error:" in proc.stderr and "Traceback" not in proc.stderr


def test_ci_runs_the_readme_test_command(root):
    readme = (root / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (root / ".ci" / "run").read_text()
