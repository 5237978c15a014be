"""The run folder (``OUT/runs/<experiment>``): its file names, ``run.json``, and whether it may be resumed.

Every other module names a run folder's files through this one (docs/run-folder.md says what each holds):

* :data:`MODEL` (``model.pt``, the final weights), :data:`CONFIG` (``config.yaml``), :data:`RUN_INFO`
  (``run.json``), :data:`LAST_CHECKPOINT` (``checkpoints/last.pt``), :data:`TRAIN_LOG`,
  :data:`EVALUATION` (``evaluation.json``), :data:`TIMINGS` (``timings.json``), :data:`SAMPLES`
  (``samples.npz``, what the report's run figures draw: :mod:`emanet.engine.samples`), and per protocol
  :func:`metrics_path` (``metrics.json`` for ``ss``, ``metrics_<protocol>.json`` else),
  :func:`per_class_path` and :func:`submission_path`.
* ``run.json`` records the training identity (:func:`training_record`: ``identity.training.digest`` and
  ``.values``, ``identity.init_sha256``) and, per protocol, the evaluation identity, the SHA-256 of the
  ``model.pt`` it scored and the code digest (:func:`evaluation_record`). Read with :func:`read_info`
  (older folders lack these keys: readers treat them as unknown), written with :func:`write_info` (atomic).
* A folder may be resumed only by a run of the same training identity and initial weights
  (:func:`resume_conflict`); otherwise ``--replace-changed`` moves it to ``<run>.replaced-<digest>...``
  (:func:`set_aside`), and nothing is deleted. An evaluation-only change keeps the folder and its weights.

Torch-free: ``emanet status`` and the report read folders without loading torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emanet.config import Config, flatten
from emanet.io import atomic_write_json
from emanet.runs.code import code_digest
from emanet.runs.identity import current_rules, digest, evaluation_identity, same_training, training_identity

MODEL = "model.pt"
CONFIG = "config.yaml"
RUN_INFO = "run.json"
LAST_CHECKPOINT = "checkpoints/last.pt"
TRAIN_LOG = "train_log.csv"
EVALUATION = "evaluation.json"
TIMINGS = "timings.json"
SAMPLES = "samples.npz"
#: ``<run><SET_ASIDE><digest>...``: a run folder moved aside by ``--replace-changed``.
SET_ASIDE = ".replaced-"
#: What a reader shows for a key an older run.json does not hold.
UNKNOWN = "unknown"


def run_dir(results_root: str | Path, experiment: str) -> Path:
    """``results_root/runs/<experiment>``: where a run of the profile's results lives."""
    return Path(results_root) / "runs" / experiment


def _suffix(protocol: str) -> str:
    return "" if protocol == "ss" else f"_{protocol}"


def metrics_path(run_dir: Path, protocol: str) -> Path:
    """``metrics.json`` for the default protocol ``ss`` (single scale, T_eval as trained), else
    ``metrics_<protocol>.json``."""
    return Path(run_dir) / f"metrics{_suffix(protocol)}.json"


def per_class_path(run_dir: Path, protocol: str) -> Path:
    """``per_class.csv`` (``ss``) or ``per_class_<protocol>.csv``: the protocol's IoU per class."""
    return Path(run_dir) / f"per_class{_suffix(protocol)}.csv"


def submission_path(run_dir: Path, protocol: str, ext: str) -> Path:
    """``submission_<protocol>.<ext>``: a split without labels packaged for the evaluation server
    (``tar.gz``) and its summary (``json``)."""
    return Path(run_dir) / f"submission_{protocol}.{ext}"


class RecordError(ValueError):
    """A run.json that cannot be used: not JSON, not an object, or a known key of the wrong type. ``why``
    says what is wrong, without the path."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"{path}: {why}; restore it or set the run folder aside")
        self.path, self.why = path, why


#: run.json's keys that hold an object when present (null allowed: treated as absent).
_OBJECT_KEYS = ("identity", "train", "model", "evaluations", "code", "imported", "params", "tags")


def record_problem(info: dict[str, Any]) -> str | None:
    """What is wrong with the types of run.json's known keys (``identity``, ``train``, ``evaluations``...:
    objects, ``evaluations.<protocol>`` objects, ``train.sessions`` a list), or None when nothing is."""
    for key in _OBJECT_KEYS:
        if info.get(key) is not None and not isinstance(info[key], dict):
            return f"{key} is a {type(info[key]).__name__}, not an object"
    nested = {
        "identity.training": (info.get("identity") or {}).get("training"),
        **{f"evaluations.{p}": r for p, r in (info.get("evaluations") or {}).items()},
        **{
            f"evaluations.{p}.identity": (r or {}).get("identity")
            for p, r in (info.get("evaluations") or {}).items()
            if isinstance(r, dict)
        },
    }
    for key, value in nested.items():
        if value is not None and not isinstance(value, dict):
            return f"{key} is a {type(value).__name__}, not an object"
    sessions = (info.get("train") or {}).get("sessions")
    if sessions is not None and not isinstance(sessions, list):
        return f"train.sessions is a {type(sessions).__name__}, not a list"
    return None


def read_info(run_dir: Path) -> dict[str, Any]:
    """``run_dir/run.json`` as a dict; ``{}`` when there is none. Raises :class:`RecordError` (a ValueError)
    naming the file when it is not a JSON object or a known key has the wrong type
    (:func:`record_problem`): a damaged record must not be overwritten silently."""
    path = Path(run_dir) / RUN_INFO
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise RecordError(path, f"holds a {type(info).__name__}, not a JSON object")
    problem = record_problem(info)
    if problem:
        raise RecordError(path, problem)
    return info


def read_record(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """(:func:`read_info`, None), or ({}, why) when run.json cannot be used (unreadable, damaged, a
    folder): for readers that go on past a damaged run (``emanet status``, the report). ``why`` is one
    line: ``run.json unreadable: <what is wrong>; rerun or remove the folder``."""
    try:
        return read_info(run_dir), None
    except RecordError as exc:
        return {}, f"run.json unreadable: {exc.why}; rerun or remove the folder"
    except OSError as exc:
        return {}, f"run.json unreadable: {exc.strerror or exc}; rerun or remove the folder"


def write_info(run_dir: Path, info: dict[str, Any]) -> Path:
    """Write ``info`` as ``run_dir/run.json`` atomically (sorted keys, indented)."""
    return atomic_write_json(Path(run_dir) / RUN_INFO, info)


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of the file ``path`` (:func:`emanet.data.archives.transfer.file_digests`, the one
    chunked file hasher; imported here only when a file is hashed)."""
    from emanet.data.archives.transfer import file_digests

    return file_digests(Path(path), ["sha256"])["sha256"]


def model_record(path: Path) -> dict[str, Any]:
    """``{"sha256", "size", "mtime_ns"}`` of a ``model.pt``: run.json's ``model``, so that a reader can
    skip hashing a file whose size and modification time are unchanged (:func:`model_sha256`)."""
    stat = Path(path).stat()
    return {"sha256": file_sha256(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def model_sha256(run_dir: Path, info: dict[str, Any] | None = None) -> str | None:
    """The SHA-256 of ``run_dir/model.pt`` (None when absent): run.json's ``model.sha256`` when the file's
    size and modification time are those recorded beside it, else hashed now."""
    path = Path(run_dir) / MODEL
    if not path.is_file():
        return None
    known = (info if info is not None else read_info(run_dir)).get("model") or {}
    stat = path.stat()
    if known.get("sha256") and known.get("size") == stat.st_size and known.get("mtime_ns") == stat.st_mtime_ns:
        return known["sha256"]
    return file_sha256(path)


def training_record(cfg: Config, init: Path | None) -> dict[str, Any]:
    """run.json's ``identity``: ``{"training": {"digest", "values"}, "init_sha256"}``, the training
    identity of ``cfg`` (:func:`emanet.runs.identity.training_identity`) and the SHA-256 of the initial
    weights file ``init`` (ImageNet checkpoint or parent run's model.pt; None: none)."""
    values = training_identity(cfg)
    return {
        "training": {"digest": digest(values), "values": values},
        "init_sha256": file_sha256(init) if init else None,
    }


def evaluation_record(cfg: Config, protocol: str, model_sha: str | None, data_checksum: str | None) -> dict[str, Any]:
    """What run.json's ``evaluations.<protocol>`` records about what determined the protocol's numbers:
    ``identity`` (``{"digest", "values"}`` of :func:`emanet.runs.identity.evaluation_identity` for this
    protocol alone), ``model_sha256`` (the model.pt scored), ``code.evaluate`` and ``data_checksum`` (the
    evaluated data's). ``cfg.eval`` must hold the scales and split actually used."""
    values = evaluation_identity(cfg, [protocol])
    return {
        "identity": {"digest": digest(values), "values": values},
        "model_sha256": model_sha,
        "code": {"evaluate": code_digest("evaluate")},
        "data_checksum": data_checksum,
    }


def recorded_training(info: dict[str, Any]) -> tuple[str | None, dict | None, str | None]:
    """(training digest, its values, init_sha256) as run.json records them; Nones for an older folder."""
    identity = info.get("identity") if isinstance(info.get("identity"), dict) else {}
    training = identity.get("training") if isinstance(identity.get("training"), dict) else {}
    return training.get("digest"), training.get("values"), identity.get("init_sha256")


def changed_settings(old: dict | None, new: dict, limit: int = 4) -> str:
    """The settings that differ between two identities' values, dotted, as ``key old -> new`` joined by
    ``, `` (at most ``limit``, then ``(+N more)``); ``"unrecorded"`` when ``old`` is None."""
    if not isinstance(old, dict):
        return "unrecorded"
    before, after = flatten(current_rules(old) if "model" in old else old), flatten(new)
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k, UNKNOWN) != after.get(k, UNKNOWN))
    shown = [f"{k} {json.dumps(before.get(k, UNKNOWN))} -> {json.dumps(after.get(k, UNKNOWN))}" for k in keys[:limit]]
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(shown) + more if shown else "none"


def resume_conflict(info: dict[str, Any], identity: dict[str, Any]) -> str | None:
    """Why a folder with run.json ``info`` may not be resumed (or written) by a training of ``identity``
    (:func:`training_record`), or None when it may: no run yet, or the same training identity and initial
    weights. An evaluation-only change is no conflict. Imported weights are refused by the caller."""
    recorded, values, init = recorded_training(info)
    if recorded is None:
        if info.get("config_hash") or info.get("imported"):
            return "it was made by an older emanet (no training identity recorded)"
        return None
    if not same_training(recorded, values, identity["training"]["values"]):
        return f"its training settings differ ({changed_settings(values, identity['training']['values'])})"
    if init != identity["init_sha256"]:
        now = str(identity["init_sha256"])[:12]
        return f"it started from other initial weights (sha256 {str(init)[:12]}, now {now})"
    return None


def set_aside(run_dir: Path, reason: str) -> Path:
    """Rename ``run_dir`` to ``<run>.replaced-<training digest>[-<init digest>][-imported-<digest>][.N]``
    (``unknown`` for a folder without a recorded identity; nothing is deleted), say so on stdout with
    ``reason``, and return the new place."""
    run_dir = Path(run_dir)
    info = read_info(run_dir)
    recorded, _, init = recorded_training(info)
    suffix = str(recorded or info.get("config_hash") or UNKNOWN)
    if init:
        suffix += f"-{init[:12]}"
    if info.get("imported"):
        suffix += f"-imported-{str(info['imported'].get('sha256'))[:12]}"
    target = run_dir.with_name(f"{run_dir.name}{SET_ASIDE}{suffix}")
    copies = 1
    while target.exists():  # the same run set aside before (a parent retrained back and forth)
        copies += 1
        target = run_dir.with_name(f"{run_dir.name}{SET_ASIDE}{suffix}.{copies}")
    run_dir.rename(target)
    print(f"{run_dir}: {reason}; the old run is kept in {target}")
    return target


def set_aside_if_changed(run_dir: Path, identity: dict[str, Any]) -> Path | None:
    """Set ``run_dir`` aside (:func:`set_aside`) when its training identity or initial weights differ from
    ``identity`` or it holds imported weights (training must not overwrite them); return the new place, or
    None when the folder stays (absent, or only evaluation settings changed: its model.pt is kept)."""
    info = read_info(run_dir)
    if info.get("imported"):
        return set_aside(run_dir, "it holds imported weights")
    conflict = resume_conflict(info, identity)
    return set_aside(run_dir, conflict) if conflict else None


def import_conflict(run_dir: Path, training_digest: str, sha256: str) -> str | None:
    """Why ``run_dir`` cannot take imported weights of SHA-256 ``sha256`` for a run of training identity
    ``training_digest``, or None if it can (no run yet, or the same file imported for the same training
    identity before: it may be imported again)."""
    info = read_info(run_dir)
    imported = info.get("imported")
    if not info:
        unknown = (Path(run_dir) / MODEL).exists()
        return f"{run_dir} holds a model.pt of unknown origin (no run.json)" if unknown else None
    recorded = recorded_training(info)[0]
    if imported and imported.get("sha256") == sha256 and recorded == training_digest:
        return None
    if imported:
        other = "other weights" if imported.get("sha256") != sha256 else "the same weights for another configuration"
        return f"{run_dir} holds {other}, imported from {imported.get('source')}"
    return f"{run_dir} holds a trained run (training identity {recorded or UNKNOWN})"
