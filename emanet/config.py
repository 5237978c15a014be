"""params.yaml -> typed, validated configuration, once.

``params.yaml`` holds the base configuration (the paper's recipe), named ``profiles`` that override it
(``tiny`` for CPU, ``paper`` for the real run) and, later, experiments. :func:`resolve` applies
base <- profile <- ``--set key=value`` overrides, then :func:`from_dict` turns the result into frozen
dataclasses, rejecting unknown keys, missing keys and wrong types with the dotted key named. Nothing
downstream reads the YAML again, and no dataclass field has a default: every value is in params.yaml.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """Invalid configuration; the message names the file or the dotted key."""


@dataclass(frozen=True)
class EMAConfig:
    """The EMA unit's switches (paper.md §3.6 and the Fig. 3/4 ablation axes)."""

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
    """The optimisation recipe (paper.md §4); iterations and the batch are global, over all ranks."""

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
    seed: int
    device: str
    cpu_threads: int
    amp: str
    channels_last: bool
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
        values = {k: v for k, v in self.to_dict().items()
                  if k not in ("profile", "experiment", "tracking", "sources")}
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


def load_params(path: str | Path) -> dict[str, Any]:
    """Read params.yaml; a missing or malformed file is an error naming it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def deep_merge(base: dict, override: dict, where: str = "") -> dict:
    """Return ``base`` with ``override`` merged in; an override key that base lacks is an error."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        dotted = f"{where}{key}"
        if key not in merged:
            raise ConfigError(f"unknown key {dotted!r}")
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
            raise ConfigError(f"--set expects key=value, got {item!r}")
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return nested


RESERVED = ("profile", "profiles", "experiments", "finetunes", "tables", "datasets")


def resolve(params: dict, profile: str | None = None, overrides: list[str] | None = None,
            experiment: str | None = None) -> Config:
    """base <- profile <- experiment <- the profile's own overrides of that experiment <- ``--set``.

    The fourth layer (``profiles.<p>.experiments.<name>``) lets the tiny profile shrink what an
    experiment enlarges (a 256-channel head becomes a 32-channel one on CPU) without a second list.
    ``experiment`` names a key of ``experiments`` or of ``finetunes`` (runs that start from another
    run's weights, ``train.init_from``; kept apart so DVC can declare that dependency).
    """
    profiles = params.get("profiles") or {}
    profile = profile or params.get("profile")
    if profile not in profiles:
        raise ConfigError(f"unknown profile {profile!r}; params.yaml defines {sorted(profiles)}")
    experiments = {**(params.get("experiments") or {}), **(params.get("finetunes") or {})}
    if experiment is not None and experiment not in experiments:
        raise ConfigError(f"unknown experiment {experiment!r}; params.yaml defines {sorted(experiments)}")
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
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    missing = sorted(names - set(data))
    if unknown:
        raise ConfigError(f"unknown key {where + unknown[0]!r} (allowed here: {sorted(names)})")
    if missing:
        raise ConfigError(f"missing key {where + missing[0]!r}")
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
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where + ".")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value
