"""Which code determines each stage's outputs, and its digest.

Snakemake does not track imported modules, and DVC tracks only the paths a stage lists; so each stage's
code is listed once here (:data:`STAGE_CODE`), ``dvc.yaml`` lists the same paths as dependencies (a test
checks they agree), and ``run.json`` (``complexity.json`` for the cost columns, ``report.json`` for the
report) records :func:`code_digest` of what made the output, which ``emanet status`` compares with the
code now. Everything else (the CLI, orchestration, :data:`NOT_DETERMINING`) can change without making
anything stale.

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
    "emanet/engine/dist.py",
    "emanet/engine/precision.py",
)

#: stage -> the code that determines its outputs: every emanet module its entry module imports, directly
#: or not, less :data:`NOT_DETERMINING` (tests/test_stage_code.py checks it on the source).
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "train": (
        *_MODEL_AND_LOADING,
        "emanet/engine/checkpoint.py",
        "emanet/engine/optim.py",
        "emanet/engine/sampler.py",
        "emanet/engine/syncbn.py",
        "emanet/engine/train.py",
    ),
    "evaluate": (
        *_MODEL_AND_LOADING,
        "emanet/data/classes.py",
        "emanet/data/loading/eval_loader.py",
        "emanet/engine/evaluate.py",
        "emanet/engine/inference.py",
        "emanet/engine/metrics.py",
        "emanet/engine/samples.py",
        "emanet/engine/submission.py",
        "emanet/protocols.py",
    ),
    "report": (
        "emanet/report",
        "emanet/plan",
        "emanet/bench/cost_table.py",
        "emanet/config.py",
        "emanet/data/classes.py",
        "emanet/protocols.py",
    ),
    # Table 1's cost columns (results/<profile>/bench/complexity.json): counted on the models' shapes
    "complexity": (
        "emanet/bench/complexity.py",
        "emanet/bench/cost_table.py",
        "emanet/config.py",
        "emanet/models",
        "emanet/plan/figures.py",
        "emanet/plan/tables.py",
        "emanet/protocols.py",
    ),
}

#: Modules the stages import that determine none of their outputs (no weight, number, table or figure
#: changes with them), with why; :data:`STAGE_CODE` leaves them out, so editing them reruns nothing.
NOT_DETERMINING: dict[str, str] = {
    "emanet/errors.py": "exception types",
    "emanet/names.py": "the naming rule of experiments and profiles: checks names, computes nothing",
    "emanet/textfile.py": "reads a text file or says why it cannot (the params file's content is tracked)",
    "emanet/io.py": "atomic writes and JSON reading: where and how bytes land, not which bytes",
    "emanet/progress.py": "progress lines",
    "emanet/logfilters.py": "drops known-noise log records",
    "emanet/tracking/__init__.py": "MLflow mirror of the run folder",
    "emanet/tracking/store.py": "MLflow store locations",
    "emanet/tracking/views.py": "MLflow experiment views",
    "emanet/runs/code.py": "these lists and the code digest recorded beside the outputs",
    "emanet/runs/folder.py": "run folder file names and run.json's records",
    "emanet/runs/identity.py": "the identities recorded and compared for staleness; the settings they hold are tracked",
    "emanet/runs/record.py": "run.json's times and machine",
    "emanet/runs/status.py": "staleness diagnosis (the report's stale marks: recomputed by every report)",
    "emanet/engine/validation.py": "validation during training: train_log.csv's val_miou; weights and RNG untouched",
    "emanet/data/archives/catalog.py": "names the checkpoint files; their bytes are tracked (init_sha256, DVC deps)",
    "emanet/data/archives/transfer.py": "fetching and checksumming files (a checksum records an output)",
    "emanet/data/convert/official.py": "the dataset and split names config checks; the prepared data is tracked",
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
