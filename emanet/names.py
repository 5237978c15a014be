"""Names in params.yaml: one pattern for everything that becomes a DVC stage, a wildcard, a folder or a run.

Every key of ``experiments``, ``finetunes``, ``tables``, ``profiles`` (and of ``profiles.<p>.experiments``)
and every entry of ``datasets`` matches :data:`NAME_PATTERN`, since each becomes a DVC stage, a Snakemake
wildcard, a folder, an MLflow run or a table file; every other key is text, so sorting and dotted keys never
meet a number. :func:`emanet.config.load_params` calls :func:`check_names` before anything else.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import yaml

from emanet.errors import ConfigError

#: The one pattern for every name that becomes a DVC stage (``train@<name>``), a Snakemake wildcard, a
#: folder (``results/<profile>/runs/<name>``), an MLflow run or experiment, or a table file: a lower-case
#: letter, then lower-case letters, digits and underscores. Excluded on purpose: ``/`` (a folder), ``.``
#: and ``-`` (``--set`` keys are dotted; set-aside runs are ``<run>.replaced-<hash>``), ``@`` (DVC's
#: ``stage@item``), ``:`` and spaces (shell commands, Slurm job names), regex characters (Snakemake's
#: wildcard constraints), upper case (folders that differ only in case collide on macOS and Windows), a
#: leading digit, and YAML 1.1's words for booleans and null, which an unquoted value reads as non-text.
NAME_PATTERN = re.compile(r"(?!(?:null|true|false|yes|no|on|off)$)[a-z][a-z0-9_]*")
NAME_RULE = (
    "a lower-case letter, then lower-case letters, digits or underscores, and not one of YAML's "
    "words null, true, false, yes, no, on, off (pattern ^[a-z][a-z0-9_]*$)"
)
#: The sections whose keys are names (``datasets`` is a list of names), and what a suggested name starts with.
NAMED_SECTIONS = {"experiments": "run", "finetunes": "run", "tables": "table", "profiles": "profile"}
_REFERENCES = {
    "run": " (and every reference to it: train.init_from, tables' rows, --experiment)",
    "table": " (and --table)",
    "profile": " (and `profile:`, --profile)",
    "dataset": " (and data.dataset)",
}
_YAML_READINGS = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (type(None), "null"),
    (datetime.date, "a date"),
)


def show_key(value: Any) -> str:
    """A key as it reads in params.yaml (``2021``, ``true``, ``null``), for dotted keys in messages."""
    if isinstance(value, str):
        return value or "''"
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def _yaml_kind(value: Any) -> str:
    """What YAML made of an unquoted key: ``a boolean`` for ``on``, ``an integer`` for ``2021``..."""
    return next((label for cls, label in _YAML_READINGS if isinstance(value, cls)), type(value).__name__)


def _bad_name(where: str, name: Any, prefix: str) -> ConfigError:
    """The error for a name that breaks NAME_PATTERN, with a suggested replacement."""
    shown = show_key(name)
    if isinstance(name, str):
        what = f"{shown!r} is not a valid name"
    else:
        what = f"YAML reads this name as {_yaml_kind(name)}, not text"
    suggestion = re.sub(r"[^a-z0-9]+", "_", shown.lower()).strip("_")
    if not NAME_PATTERN.fullmatch(suggestion):
        suggestion = f"{prefix}_{suggestion}".rstrip("_")
    return ConfigError(
        f"{where}: {what}. Names of experiments, finetunes, tables, datasets and profiles become "
        f"DVC stages, Snakemake wildcards, folders and MLflow runs, so each must be {NAME_RULE}. "
        f"Rename it, e.g. to {suggestion!r}{_REFERENCES[prefix]}"
    )


def check_names(params: dict, source: str | Path | None = None) -> None:
    """Check every name in ``params`` against :data:`NAME_PATTERN`, and that every other key is text.

    Names: the keys of ``experiments``, ``finetunes``, ``tables``, ``profiles`` and
    ``profiles.<p>.experiments``, and the entries of ``datasets``. Raises :class:`ConfigError` naming
    ``source`` (when given) and the dotted key, e.g. ``params.yaml: experiments.2021: ...``; a section that
    is not a mapping (``datasets``: not a list) is an error too. Nothing is sorted before these checks, so a
    key YAML reads as a number, boolean, null or date never reaches a comparison with text.
    """
    where = f"{source}: " if source else ""
    sections = {name: params.get(name) for name in NAMED_SECTIONS}
    if isinstance(params.get("profiles"), dict):
        for name, profile in params["profiles"].items():
            if isinstance(profile, dict) and "experiments" in profile:
                sections[f"profiles.{show_key(name)}.experiments"] = profile["experiments"]
    for section, mapping in sections.items():
        if mapping is None:
            continue
        if not isinstance(mapping, dict):
            raise ConfigError(f"{where}{section}: expected a mapping of name -> settings, got {type(mapping).__name__}")
        prefix = NAMED_SECTIONS.get(section, "run")
        for name in mapping:
            if not (isinstance(name, str) and NAME_PATTERN.fullmatch(name)):
                raise _bad_name(f"{where}{section}.{show_key(name)}", name, prefix)
    datasets = params.get("datasets")
    if datasets is not None:
        if not isinstance(datasets, list):
            raise ConfigError(f"{where}datasets: expected a list of dataset names, got {type(datasets).__name__}")
        for i, name in enumerate(datasets):
            if not (isinstance(name, str) and NAME_PATTERN.fullmatch(name)):
                raise _bad_name(f"{where}datasets[{i}]", name, "dataset")
    _check_keys_are_text(params, where, "")


def _check_keys_are_text(node: Any, where: str, dotted: str) -> None:
    """Every mapping key below ``node`` is a string (YAML reads ``2021:``, ``on:`` or ``~:`` otherwise)."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{dotted}{show_key(key)}"
            if not isinstance(key, str):
                raise ConfigError(
                    f"{where}{path}: YAML reads this key as {_yaml_kind(key)}, not text; every key "
                    f"of params.yaml is a name (a setting, a run, a table): write one there"
                )
            _check_keys_are_text(value, where, path + ".")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_keys_are_text(value, where, f"{dotted.removesuffix('.')}[{i}].")
