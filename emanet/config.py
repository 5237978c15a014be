"""params.yaml -> typed, validated configuration, once.

``params.yaml`` holds the base configuration (the paper's recipe), named ``profiles`` that override it
(``tiny`` for CPU, ``paper`` for the real run) and, later, experiments. :func:`resolve` applies
base <- profile <- ``--set key=value`` overrides, then :func:`from_dict` turns the result into frozen
dataclasses, rejecting unknown keys, missing keys and wrong types with the dotted key named. Nothing
downstream reads the YAML again, and no dataclass field has a default: every value is in params.yaml.

Names are checked before anything else (:func:`check_names`): every key of ``experiments``,
``finetunes``, ``tables``, ``profiles`` (and of ``profiles.<p>.experiments``) and every entry of
``datasets`` matches :data:`NAME_PATTERN`, since each becomes a DVC stage, a Snakemake wildcard, a folder,
an MLflow run or a table file; every other key is text, so sorting and dotted keys never meet a number.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from emanet.textfile import read_text_file


class ConfigError(ValueError):
    """Invalid configuration; the message names the file or the dotted key."""


class ParamsError(ConfigError):
    """An error in the parameters' content found while resolving them (an unknown, missing or mistyped key,
    an unknown profile or experiment, a bad --set): the CLI names the params file (and the --set overrides)
    it came from, which the resolver does not know."""


@dataclass(frozen=True)
class EMAConfig:
    """The EMA unit's switches (docs/reproducing.md#the-ema-head and the Fig. 3/4 ablation axes)."""

    num_bases: int
    stages: int
    eval_stages: int | None
    momentum: float
    maintenance: str
    norm: str
    renormalize: bool


@dataclass(frozen=True)
class ModelConfig:
    """Backbone and head; ``pretrained`` is a local ImageNet checkpoint or null."""

    backbone: str
    stem: str
    base_width: int
    output_stride: int
    multi_grid: list[int] | None
    head: str
    head_channels: int
    dropout: float
    bn_momentum: float
    pretrained: str | None
    ema: EMAConfig


@dataclass(frozen=True)
class SourcesConfig:
    """Where the data stages read and write; ``synthetic`` makes `emanet synth` the archives' source."""

    raw_dir: str
    weights_dir: str
    synthetic: bool
    mirrors: list[str]
    manifest: str | None


@dataclass(frozen=True)
class DataConfig:
    """Which prepared dataset to train and evaluate on (``root/<dataset>`` from ``emanet prepare``)."""

    dataset: str
    root: str
    train_split: str
    val_split: str
    workers: int


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe (docs/reproducing.md#training-recipe); iterations and the batch are global, over
    all ranks."""

    iterations: int
    batch_size: int
    crop_size: int
    scales: list[float]
    lr: float
    momentum: float
    weight_decay: float
    poly_power: float
    lr_step_every: int
    loss_normalization: str
    checkpoint_interval: int
    log_interval: int
    eval_interval: int
    seed: int
    device: str
    cpu_threads: int
    amp: str
    channels_last: bool
    compile: bool
    deterministic: bool
    init_from: str | None


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation protocol: the dataset and split, the output stride (None: as trained; the paper trains
    Fig. 4's models at 16 and tests at 8), and the scales and flip of multi-scale testing.

    A split without labels (VOC test) is predicted and packaged for the evaluation server instead of
    scored; ``server_labels`` points a local stand-in for that server at ground truth (synthetic only).
    """

    dataset: str | None
    split: str
    output_stride: int | None
    scales: list[float]
    flip: bool
    server_labels: str | None


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow: ``uri`` null means $MLFLOW_TRACKING_URI, else a sqlite store in the project."""

    enabled: bool
    uri: str | None
    experiment: str


@dataclass(frozen=True)
class Config:
    """The resolved configuration of one experiment in one profile."""

    profile: str
    experiment: str
    sources: SourcesConfig
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig
    tracking: TrackingConfig

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Short stable hash of everything that determines the result (not the names)."""
        values = {k: v for k, v in self.to_dict().items() if k not in ("profile", "experiment", "tracking", "sources")}
        values["data"] = {k: v for k, v in values["data"].items() if k != "workers"}
        blob = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}, for logging params."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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


def _shown(value: Any) -> str:
    """A key as it reads in params.yaml (``2021``, ``true``, ``null``), for dotted keys in messages."""
    if isinstance(value, str):
        return value or "''"
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def _yaml_kind(value: Any) -> str:
    """What YAML made of an unquoted key: ``a boolean`` for ``on``, ``an integer`` for ``2021``..."""
    return next((label for cls, label in _YAML_READINGS if isinstance(value, cls)), type(value).__name__)


def _bad_name(where: str, name: Any, prefix: str) -> ConfigError:
    """The error for a name that breaks NAME_PATTERN, with a suggested replacement."""
    shown = _shown(name)
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
                sections[f"profiles.{_shown(name)}.experiments"] = profile["experiments"]
    for section, mapping in sections.items():
        if mapping is None:
            continue
        if not isinstance(mapping, dict):
            raise ConfigError(f"{where}{section}: expected a mapping of name -> settings, got {type(mapping).__name__}")
        prefix = NAMED_SECTIONS.get(section, "run")
        for name in mapping:
            if not (isinstance(name, str) and NAME_PATTERN.fullmatch(name)):
                raise _bad_name(f"{where}{section}.{_shown(name)}", name, prefix)
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
            path = f"{dotted}{_shown(key)}"
            if not isinstance(key, str):
                raise ConfigError(
                    f"{where}{path}: YAML reads this key as {_yaml_kind(key)}, not text; every key "
                    f"of params.yaml is a name (a setting, a run, a table): write one there"
                )
            _check_keys_are_text(value, where, path + ".")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_keys_are_text(value, where, f"{dotted.removesuffix('.')}[{i}].")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then overriding keys is legitimate
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader's own error names it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {_shown(key)!r} appears twice in one mapping (first on line {first}); "
                    f"YAML would keep only the last: rename or merge them",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_params(path: str | Path) -> dict[str, Any]:
    """Read params.yaml and check its names (:func:`check_names`).

    Raises :class:`ConfigError` naming the file: missing, not valid YAML, a key written twice in one
    mapping, not a mapping at the top level, or a bad name (with its dotted key).
    """
    path = Path(path)
    try:
        data = yaml.load(read_text_file(path, ConfigError), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    check_names(data, path)
    return data


def deep_merge(base: dict, override: dict, where: str = "") -> dict:
    """Return ``base`` with ``override`` merged in; an override key that base lacks is an error."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        dotted = f"{where}{key}"
        if key not in merged:
            raise ParamsError(f"unknown key {dotted!r}")
        if isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = deep_merge(merged[key], value, dotted + ".")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_set(assignments: list[str]) -> dict:
    """``["model.ema.num_bases=32", ...]`` -> nested dict; values are parsed as YAML scalars/lists."""
    nested: dict = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ParamsError(f"--set expects key=value, got {item!r}")
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return nested


RESERVED = ("profile", "profiles", "experiments", "finetunes", "tables", "datasets")


def resolve(
    params: dict, profile: str | None = None, overrides: list[str] | None = None, experiment: str | None = None
) -> Config:
    """base <- profile <- experiment <- the profile's own overrides of that experiment <- ``--set``.

    The fourth layer (``profiles.<p>.experiments.<name>``) lets the tiny profile shrink what an
    experiment enlarges (a 256-channel head becomes a 32-channel one on CPU) without a second list.
    ``experiment`` names a key of ``experiments`` or of ``finetunes`` (runs that start from another
    run's weights, ``train.init_from``; kept apart so DVC can declare that dependency).
    Raises :class:`ConfigError` naming the dotted key: a bad name (:func:`check_names`), an unknown
    profile or experiment, an unknown or missing key, a value of the wrong type.
    """
    check_names(params)
    profiles = params.get("profiles") or {}
    profile = profile or params.get("profile")
    if profile not in profiles:
        raise ParamsError(f"unknown profile {profile!r}; the params define {sorted(profiles)}")
    experiments = {**(params.get("experiments") or {}), **(params.get("finetunes") or {})}
    if experiment is not None and experiment not in experiments:
        raise ParamsError(f"unknown experiment {experiment!r}; the params define {sorted(experiments)}")
    base = {k: v for k, v in params.items() if k not in RESERVED}
    profile_overrides = dict(profiles[profile] or {})
    profile_experiments = profile_overrides.pop("experiments", None) or {}
    merged = deep_merge(base, profile_overrides)
    if experiment is not None:
        merged = deep_merge(merged, experiments[experiment] or {})
        merged = deep_merge(merged, profile_experiments.get(experiment) or {})
    merged = deep_merge(merged, parse_set(overrides or []))
    merged["profile"], merged["experiment"] = profile, experiment or "default"
    return from_dict(Config, merged)


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, checking keys and types recursively."""
    if not isinstance(data, dict):
        raise ParamsError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    missing = sorted(names - set(data))
    if unknown:
        raise ParamsError(f"unknown key {where + unknown[0]!r} (allowed here: {sorted(names)})")
    if missing:
        raise ParamsError(f"missing key {where + missing[0]!r}")
    hints = typing.get_type_hints(cls)
    return cls(**{n: _coerce(data[n], hints[n], f"{where}{n}") for n in names})


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ParamsError(errors[0])
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where + ".")
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ParamsError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value
