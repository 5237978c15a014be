"""Logs keep to what the user needs: torch's CPU-machine notice about CUDA_HOME is dropped, nothing else."""

from __future__ import annotations

import logging
import subprocess
import sys

from emanet.cli import drop_cuda_home_notice
from emanet.logfilters import DropPrefix


def test_cuda_home_notice_is_dropped_and_other_records_pass(caplog):
    drop_cuda_home_notice()
    drop_cuda_home_notice()  # idempotent: one filter
    logger = logging.getLogger("torch.utils.cpp_extension")
    assert sum(isinstance(f, DropPrefix) and f.prefix.startswith("No CUDA runtime") for f in logger.filters) == 1
    with caplog.at_level(logging.INFO):
        logger.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local")
        logger.warning("Some other notice %s", "kept")
    kept = [r.getMessage() for r in caplog.records if r.name == "torch.utils.cpp_extension"]
    assert kept == ["Some other notice kept"]


def test_cli_process_imports_the_plan_without_the_notice():
    """A CLI process that imports the plan (as every pipeline command does) and then torch's cpp_extension
    (which logs the CUDA_HOME notice when imported) shows no notice."""
    code = (
        "import sys; from emanet import cli; cli.drop_cuda_home_notice(); import emanet.plan; "
        "import torch.utils.cpp_extension"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "CUDA_HOME" not in done.stderr
