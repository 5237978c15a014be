"""The configure step: each run's identities as small files that the orchestrators' stages depend on.

``results/<profile>/configs/`` holds, for every run of the plan,

* ``<run>/train.json``: its training identity (:func:`emanet.runs.identity.training_identity`), what
  determines ``model.pt``; the ``train`` and ``finetune`` stages depend on it;
* ``<run>/evaluate.json``: its evaluation identity for the protocols the tables need from it
  (:func:`emanet.runs.identity.evaluation_identity`), what determines ``evaluation.json``; the ``evaluate``
  stage depends on it;

and ``report.json``: the ``tables`` and ``figures`` sections of the params file, what the report draws
besides the runs' files; the ``report`` stage depends on it; and ``weights.json``: the catalog names of the
ImageNet checkpoints the profile's runs start from (:func:`emanet.plan.weights`), what DVC's ``weights``
stage downloads (a run's backbone comes from the top-level model, the profile and the experiment, which no
params list of DVC's can follow; the Snakefile's ``weights`` rule has the same list as a param).

Each file is written only when its content changes (read, compare, then an atomic rename), so an unchanged
file keeps its modification time: Snakemake (``mtime`` trigger) and DVC (content hash) both rerun exactly
the stages whose identity changed, and nothing for an edit of a cadence, a location or another profile.
Files of runs no longer in the plan are removed. Calling it twice, or from several processes at once (a
cluster's jobs each parse the Snakefile), writes the same bytes: it is idempotent and safe.

Each file holds ``{"digest": <12 hex digits>, "identity": {...}}`` as indented, sorted JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from emanet.io import atomic_write_text
from emanet.runs.identity import digest, evaluation_identity, training_identity

#: The file names of one run's configs folder, and the report's file.
TRAIN_FILE, EVALUATE_FILE, REPORT_FILE = "train.json", "evaluate.json", "report.json"
#: The ImageNet checkpoints' file (top level, like the report's).
WEIGHTS_FILE = "weights.json"


class ConfigureError(ValueError):
    """A configs folder the step cannot write: the message names the path, what is in the way and what to do."""


def _blocked(root: Path, relative: str) -> str | None:
    """Why ``root/relative`` cannot be written as a file (a folder where the file goes, a file where a
    folder goes), or None."""
    path = root / relative
    if path.exists() and not path.is_file():
        return f"{path} is a folder, not a file: remove it (the configure step writes the file there)"
    for folder in reversed(path.parents):
        if folder.exists() and not folder.is_dir():
            return f"{folder} is a file, not a folder: remove or move it (the configure step writes {path})"
    return None


def configs_dir(profile: str, results: str | Path | None = None) -> Path:
    """``results/<profile>/configs`` (``results``: the profile's results folder, default ``results/<profile>``)."""
    return Path(results or f"results/{profile}") / "configs"


def identity_files(params: dict, profile: str | None = None) -> dict[str, dict]:
    """``{relative path: identity}`` of every file the configure step writes for ``profile`` (the params
    file's default when None): ``<run>/train.json``, ``<run>/evaluate.json`` per run, ``report.json`` and
    ``weights.json``.

    Raises ConfigError (naming the key) for an invalid params file: the plan is validated (runs, chains,
    tables, the ``datasets`` list) and every run resolved for ``profile``.
    """
    from emanet import plan

    plan.datasets(params, profile)  # params.yaml's datasets list must be what the runs use (DVC's foreach reads it)
    files: dict[str, dict] = {}
    for run, cfg in plan.configs(params, profile).items():
        files[f"{run}/{TRAIN_FILE}"] = training_identity(cfg)
        files[f"{run}/{EVALUATE_FILE}"] = evaluation_identity(cfg, plan.protocols(params, run))
    files[REPORT_FILE] = {section: params.get(section) or {} for section in ("tables", "figures")}
    files[WEIGHTS_FILE] = {"weights": plan.weights(params, profile)}
    return files


def render(identity: dict) -> str:
    """A config file's text: the identity's digest and the identity itself, indented and sorted."""
    return json.dumps({"digest": digest(identity), "identity": identity}, indent=2, sort_keys=True) + "\n"


def configure(params: dict, profile: str | None = None, results: str | Path | None = None) -> dict[str, list[str]]:
    """Write the identity files of ``profile`` under ``configs_dir`` (see the module's docstring).

    Returns ``{"written": [...], "unchanged": [...], "removed": [...]}`` (paths relative to the configs
    folder, sorted). Raises ConfigError for an invalid params file, ConfigureError (a ValueError: the CLI's
    exit 2) naming the path when a folder stands where a file goes or a file where a folder goes (nothing is
    written then), OSError when the folder cannot be written otherwise.
    """
    from emanet.config import resolve

    name = resolve(params, profile).profile
    root = configs_dir(name, results)
    wanted = identity_files(params, profile)
    for relative in sorted(wanted):
        problem = _blocked(root, relative)
        if problem:
            raise ConfigureError(problem)
    done: dict[str, list[str]] = {"written": [], "unchanged": [], "removed": []}
    for relative, identity in sorted(wanted.items()):
        path, text = root / relative, render(identity)
        try:
            same = path.read_text() == text
        except (OSError, UnicodeDecodeError):
            same = False
        if same:
            done["unchanged"].append(relative)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
            done["written"].append(relative)
    done["removed"] = _remove_others(root, set(wanted))
    return done


def _remove_others(root: Path, wanted: set[str]) -> list[str]:
    """Remove the identity files under ``root`` that are not in ``wanted`` (runs dropped from the plan),
    then their emptied folders; other files are left alone. Another process removing them first is fine."""
    removed = []
    for path in sorted(root.glob("*/*.json")) + sorted(root.glob("*.json")):
        relative = path.relative_to(root).as_posix()
        if relative in wanted or path.name not in (TRAIN_FILE, EVALUATE_FILE, REPORT_FILE):
            continue
        path.unlink(missing_ok=True)
        removed.append(relative)
        if path.parent == root:
            continue
        try:
            path.parent.rmdir()
        except OSError:  # not empty (another file kept), or already removed by a concurrent parse
            pass
    return removed
