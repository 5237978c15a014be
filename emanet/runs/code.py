"""Which code determines each stage's outputs, and its digest.

Snakemake does not track imported modules, and DVC tracks only the paths a stage lists; so each stage's
code is listed once here (:data:`STAGE_CODE`), ``dvc.yaml`` lists the same paths as dependencies (a test
checks they agree), and ``run.json`` records :func:`code_digest` of what made the run, which
``emanet status`` compares with the code now. Everything else (the CLI, orchestration, tracking,
benchmarks, the report for training) can change without making a run stale.

Paths are relative to the repository root (the folder holding the ``emanet`` package); a folder stands
for every ``.py`` file below it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

#: The repository root: the folder holding the ``emanet`` package.
ROOT = Path(__file__).resolve().parents[2]

_MODEL_AND_LOADING = (
    "emanet/config.py",
    "emanet/models",
    "emanet/data/files.py",
    "emanet/data/layout.py",
    "emanet/data/loading/dataset.py",
    "emanet/data/loading/transforms.py",
)

#: stage -> the code that determines its outputs.
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "train": (
        *_MODEL_AND_LOADING,
        "emanet/engine/checkpoint.py",
        "emanet/engine/dist.py",
        "emanet/engine/optim.py",
        "emanet/engine/sampler.py",
        "emanet/engine/syncbn.py",
        "emanet/engine/train.py",
    ),
    "evaluate": (
        *_MODEL_AND_LOADING,
        "emanet/data/loading/eval_loader.py",
        "emanet/engine/dist.py",
        "emanet/engine/evaluate.py",
        "emanet/engine/inference.py",
        "emanet/engine/metrics.py",
        "emanet/engine/samples.py",
        "emanet/engine/submission.py",
        "emanet/protocols.py",
    ),
    "report": ("emanet/report", "emanet/plan/figures.py"),
}


def code_files(stage: str, root: Path = ROOT) -> list[Path]:
    """The ``.py`` files of ``stage``'s code under ``root``, sorted; KeyError for an unknown stage,
    FileNotFoundError naming a listed path that does not exist."""
    files: set[Path] = set()
    for entry in STAGE_CODE[stage]:
        path = root / entry
        if path.is_dir():
            files.update(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        elif path.is_file():
            files.add(path)
        else:
            raise FileNotFoundError(f"{path}: listed in emanet.runs.code.STAGE_CODE[{stage!r}] but missing")
    return sorted(files)


def code_digest(stage: str, root: Path = ROOT) -> str:
    """SHA-256 (first 12 hex digits) over each file of :func:`code_files`: its path relative to ``root``
    and its bytes. Moving, adding, removing or editing any of them changes it; nothing else does."""
    hasher = hashlib.sha256()
    for path in code_files(stage, root):
        hasher.update(path.relative_to(root).as_posix().encode() + b"\0")
        hasher.update(hashlib.sha256(path.read_bytes()).digest())
    return hasher.hexdigest()[:12]
