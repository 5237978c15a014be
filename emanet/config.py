"""params.yaml -> typed, validated configuration, once.

``params.yaml`` holds the base configuration (the paper's recipe), named ``profiles`` that override it
(``tiny`` for CPU, ``paper`` for the real run) and, later, experiments. :func:`resolve` applies
base <- profile <- experiment <- ``--set key=value`` overrides, then :func:`from_dict` turns the result into
frozen dataclasses, rejecting unknown keys, missing keys, wrong types and values outside a setting's fixed
choices (the ``Literal`` types below: ``head``, ``norm``, ``amp``...), each with the dotted key named where it
was written (``experiments.k16.model.ema.norm``, ``profiles.paper.train.amp``). :func:`check_all` does so for
every run in every profile at once, so a typo fails the pipeline at start, not a training job hours later.
Nothing downstream reads the YAML again, and no dataclass field has a default: every value is in params.yaml.

Names are checked before anything else (:func:`emanet.names.check_names`).

The type checks are written here (:func:`_coerce`, about 60 lines) rather than delegated to pydantic:
pydantic's strict mode refuses a mapping for a dataclass field and its lax mode reads ``1`` as ``true`` and
``"3"`` as ``3``, so the frozen dataclasses that the rest of the code copies with ``dataclasses.replace``
would have to become pydantic models, and its errors would still need rewriting to name the key where it was
written.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from emanet.errors import ConfigError, ParamsError
from emanet.names import NAME_PATTERN, NAME_RULE, NAMED_SECTIONS, check_names, show_key
from emanet.textfile import read_text_file

__all__ = [
    "NAME_PATTERN",
    "NAME_RULE",
    "NAMED_SECTIONS",
    "Config",
    "ConfigError",
    "ParamsError",
    "check_all",
    "check_names",
    "flatten",
    "from_dict",
    "load_params",
    "resolve",
]


#: The settings with a fixed set of values; the code that branches on each takes its choices from here
#: (``typing.get_args``), and tests/test_config.py checks that every branch exists.
Backbone = Literal["resnet_tiny", "resnet50", "resnet101", "resnet152"]
Stem = Literal["deep", "torchvision"]
OutputStride = Literal[8, 16, 32]
Head = Literal["ema", "fcn", "nonlocal", "a2", "aspp"]
Maintenance = Literal["moving_average", "none", "gradient"]
Norm = Literal["l2", "layer", "none"]
LossNormalization = Literal["all_pixels", "valid_pixels"]
Device = Literal["auto", "cpu", "cuda"]
Amp = Literal["none", "bf16", "fp16"]


@dataclass(frozen=True)
class EMAConfig:
    """The EMA unit's switches (docs/reproducing.md#the-ema-head and the Fig. 3/4 ablation axes)."""

    num_bases: int
    stages: int
    eval_stages: int | None
    momentum: float
    maintenance: Maintenance
    norm: Norm
    renormalize: bool


@dataclass(frozen=True)
class ModelConfig:
    """Backbone and head; ``pretrained`` is a local ImageNet checkpoint or null."""

    backbone: Backbone
    stem: Stem
    base_width: int
    output_stride: OutputStride
    multi_grid: list[int] | None
    head: Head
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
    loss_normalization: LossNormalization
    checkpoint_interval: int
    log_interval: int
    eval_interval: int
    seed: int
    device: Device
    cpu_threads: int
    amp: Amp
    channels_last: bool
    compile: bool
    deterministic: bool
    init_from: str | None


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation: the dataset and split, the output stride (None: as trained; the paper trains Fig. 4's
    models at 16 and tests at 8), and the scales of multi-scale testing. Whether a protocol flips is in its
    name (``ms_flip``: :mod:`emanet.protocols`), not here.

    A split without labels (VOC test) is predicted and packaged for the evaluation server instead of
    scored; ``server_labels`` points a local stand-in for that server at ground truth (synthetic only).
    """

    dataset: str | None
    split: str
    output_stride: OutputStride | None
    scales: list[float]
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


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}, for logging params."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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
                    f"key {show_key(key)!r} appears twice in one mapping (first on line {first}); "
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


RESERVED = ("profile", "profiles", "experiments", "finetunes", "tables", "figures", "datasets")


def resolve(
    params: dict, profile: str | None = None, overrides: list[str] | None = None, experiment: str | None = None
) -> Config:
    """base <- profile <- experiment <- the profile's own overrides of that experiment <- ``--set``.

    The fourth layer (``profiles.<p>.experiments.<name>``) lets the tiny profile shrink what an
    experiment enlarges (a 256-channel head becomes a 32-channel one on CPU) without a second list.
    ``experiment`` names a key of ``experiments`` or of ``finetunes`` (runs that start from another
    run's weights, ``train.init_from``; kept apart so DVC can declare that dependency).
    Raises :class:`ConfigError` for a bad name (:func:`check_names`), :class:`ParamsError` for an unknown
    profile or experiment, an unknown or missing key, a value of the wrong type or outside a setting's
    choices (``data.dataset`` and ``eval.dataset`` among the datasets ``emanet prepare`` writes, the splits
    among that dataset's: :func:`_check_data`), an override ``profiles.<p>.experiments.<name>`` whose name is
    no run (it would apply to nothing): every invalid setting at once, one per line, each named where it is written
    (``experiments.k16.model.ema.norm: expected one of 'l2', 'layer', 'none', got 'l3'``,
    ``profiles.paper.train.amp: ...``, ``--set model.ema.stages: ...``; a base value by its own key).
    """
    check_names(params)
    profiles = params.get("profiles") or {}
    profile = profile or params.get("profile")
    if profile not in profiles:
        raise ParamsError(f"unknown profile {profile!r}; the params define {sorted(profiles)}")
    experiments = {**(params.get("experiments") or {}), **(params.get("finetunes") or {})}
    if experiment is not None and experiment not in experiments:
        raise ParamsError(f"unknown experiment {experiment!r}; the params define {sorted(experiments)}")
    profile_overrides = dict(profiles[profile] or {})
    profile_experiments = profile_overrides.pop("experiments", None) or {}
    problems: list[_Problem] = [_not_a_run(profile, name, experiments) for name in profile_experiments]
    problems = [problem for problem in problems if problem is not None]
    layers = [("", {k: v for k, v in params.items() if k not in RESERVED}), (f"profiles.{profile}.", profile_overrides)]
    if experiment is not None:
        section = "experiments" if experiment in (params.get("experiments") or {}) else "finetunes"
        layers.append((f"{section}.{experiment}.", experiments[experiment] or {}))
        layers.append((f"profiles.{profile}.experiments.{experiment}.", profile_experiments.get(experiment) or {}))
    layers.append(("", parse_set(overrides or [])))
    merged = layers[0][1]
    for where, layer in layers[1:]:
        merged = deep_merge(merged, layer, where)
    if overrides:  # named last, so that a value --set replaces is blamed on --set
        layers[-1] = ("--set ", layers[-1][1])
    merged["profile"], merged["experiment"] = profile, experiment or "default"
    config = _build(Config, merged, "", problems)
    if config is not None:
        _check_data(config, problems)
    if problems:
        lines = [problem.render(_written_in(problem.key, layers)) for problem in problems]
        raise ParamsError(_joined(lines), lines)
    return config


def check_all(params: dict) -> dict[str, dict[str, Config]]:
    """Resolve every run (each key of ``experiments`` and ``finetunes``) and the base configuration in every
    profile of ``params``: ``{profile: {run: Config}}``.

    What the pipelines call once at start (Snakemake when it reads the Snakefile, DVC's ``configure``
    stage), so that a typo in any run of any profile, the one in use or not, fails there; also a
    ``responsibilities`` figure whose run has no EMA head in some profile (:func:`_check_figures`). Raises
    :class:`ConfigError` for a bad name, :class:`ParamsError` listing every invalid setting once (one per
    line, named where params.yaml writes it, with the profiles it fails in when not all of them).
    """
    check_names(params)
    profiles = list(params.get("profiles") or {})
    if params.get("profile") not in profiles:
        raise ParamsError(f"profile: unknown profile {params.get('profile')!r}; the params define {sorted(profiles)}")
    runs = [*(params.get("experiments") or {}), *(params.get("finetunes") or {})]
    failing: dict[str, dict[str, None]] = {}  # problem line -> the profiles it fails in, in order
    configs: dict[str, dict[str, Config]] = {profile: {} for profile in profiles}
    for profile in profiles:
        for run in (None, *runs):
            try:
                config = resolve(params, profile, experiment=run)
            except ParamsError as exc:
                for line in exc.problems:
                    failing.setdefault(line, {})[profile] = None
                continue
            if run is not None:
                configs[profile][run] = config
    _check_figures(params, configs, failing)
    if failing:
        lines = [
            line if len(where) == len(profiles) or "profiles." in line else f"{line} (in profile {', '.join(where)})"
            for line, where in failing.items()
        ]
        raise ParamsError(_joined(lines), lines)
    return configs


def _not_a_run(profile: str, name: str, runs: dict) -> _Problem | None:
    """The problem of an override ``profiles.<profile>.experiments.<name>`` whose ``name`` is no run (it would
    apply to nothing, its contents never checked), with the closest run's name; None when it is one."""
    if name in runs:
        return None
    close = difflib.get_close_matches(str(name), [str(run) for run in runs], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; rename it to a run's name or remove it"
    return _Problem(
        f"profiles.{profile}.experiments.{name}", "value", f"{name!r} is not an experiment or finetune{hint}"
    )


def _check_data(config: Config, problems: list[_Problem]) -> None:
    """``data.dataset`` and ``eval.dataset`` among the datasets ``emanet prepare`` writes, ``data.train_split``
    and ``data.val_split`` among the splits of ``data.dataset``, ``eval.split`` among those of ``eval.dataset``
    (``data.dataset`` when null): the lists of :mod:`emanet.data.convert.official` (standard library only).
    Appends one problem per bad value to ``problems``; a split of an unknown dataset is not checked."""
    from emanet.data.convert import official

    def check(key: str, value: Any, choices: tuple[str, ...], of: str = "") -> bool:
        if value in choices:
            return True
        shown = ", ".join(repr(choice) for choice in choices)
        problems.append(_Problem(key, "value", f"expected one of {shown}{of}, got {value!r}"))
        return False

    data, evaluation = config.data, config.eval
    if check("data.dataset", data.dataset, official.DATASETS):
        for key in ("train_split", "val_split"):
            check(f"data.{key}", getattr(data, key), official.splits(data.dataset), f" (the splits of {data.dataset})")
    if evaluation.dataset is None or check("eval.dataset", evaluation.dataset, official.DATASETS):
        dataset = evaluation.dataset or data.dataset
        if dataset in official.DATASETS:
            check("eval.split", evaluation.split, official.splits(dataset), f" (the splits of {dataset})")


def _check_figures(params: dict, configs: dict[str, dict[str, Config]], failing: dict[str, dict[str, None]]) -> None:
    """A ``responsibilities`` figure draws the EMA unit's responsibilities: its run's ``model.head`` must be
    ``ema`` in every profile. Adds each failing figure's line to ``failing`` with its profiles; a malformed
    figure is left to :func:`emanet.plan.figures.validate_figures`."""
    figures = params.get("figures")
    for name, figure in figures.items() if isinstance(figures, dict) else ():
        if not isinstance(figure, dict) or figure.get("kind") != "responsibilities":
            continue
        run = figure.get("experiment")
        for profile, runs in configs.items():
            config = runs.get(run) if isinstance(run, str) else None
            if config is not None and config.model.head != "ema":
                line = (
                    f"figures.{name}.experiment: a responsibilities figure draws the EMA unit's responsibilities, "
                    f"but {run!r} has model.head {config.model.head!r}; name a run with model.head 'ema'"
                )
                failing.setdefault(line, {})[profile] = None


def _joined(lines: list[str]) -> str:
    """One problem as it is; several as a count and one indented line each."""
    if len(lines) == 1:
        return lines[0]
    return f"{len(lines)} invalid settings:\n  " + "\n  ".join(lines)


def _written_in(key: str, layers: list[tuple[str, dict]]) -> str:
    """The prefix of the last layer that writes the dotted ``key`` (list indices ignored), ``""`` if none."""
    parts = re.sub(r"\[\d+\]", "", key).split(".")
    found = ""
    for prefix, tree in layers:
        node: Any = tree
        for part in parts:
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            found = prefix
    return found


@dataclass(frozen=True)
class _Problem:
    """One invalid setting: its dotted ``key`` in the resolved configuration, what is wrong with it."""

    key: str
    kind: Literal["value", "unknown", "missing"]
    detail: str

    def render(self, prefix: str = "") -> str:
        """The message, with ``prefix`` (where the key is written: ``experiments.k16.``) before the key."""
        if self.kind == "unknown":
            return f"unknown key {prefix + self.key!r} {self.detail}"
        if self.kind == "missing":
            return f"missing key {prefix + self.key!r}"
        return f"{prefix}{self.key}: {self.detail}"


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, checking keys, types and fixed choices recursively.

    Raises :class:`ParamsError` listing every problem (:func:`resolve` names where each key is written).
    """
    problems: list[_Problem] = []
    built = _build(cls, data, where, problems)
    if problems:
        lines = [problem.render() for problem in problems]
        raise ParamsError(_joined(lines), lines)
    return built


def _build(cls: type, data: Any, where: str, problems: list[_Problem]) -> Any:
    """``cls`` from the mapping ``data`` (None, with ``problems`` appended, when it is invalid)."""
    if not isinstance(data, dict):
        problems.append(_Problem(where.removesuffix(".") or "config", "value", f"expected a mapping, got {data!r}"))
        return None
    names = [f.name for f in dataclasses.fields(cls)]
    for key in sorted(set(data) - set(names)):
        problems.append(_Problem(where + key, "unknown", f"(allowed here: {sorted(names)})"))
    for key in (n for n in names if n not in data):
        problems.append(_Problem(where + key, "missing", ""))
    hints = typing.get_type_hints(cls)
    before = len(problems)
    values = {n: _coerce(data[n], hints[n], f"{where}{n}", problems) for n in names if n in data}
    return cls(**values) if len(problems) == before and len(values) == len(names) else None


def _coerce(value: Any, hint: Any, where: str, problems: list[_Problem]) -> Any:
    """``value`` checked against the type ``hint`` (an int becomes a float where a float is expected);
    a problem is appended to ``problems`` (and None returned) when it does not fit."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        first: list[_Problem] | None = None
        for option in (o for o in options if o is not type(None)):
            attempt: list[_Problem] = []
            result = _coerce(value, option, where, attempt)
            if not attempt:
                return result
            first = first if first is not None else attempt
        problems.extend(first or [])
        return None
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where + ".", problems)
    if origin is Literal:
        choices = typing.get_args(hint)
        if any(value == choice and type(value) is type(choice) for choice in choices):
            return value
        shown = ", ".join(repr(choice) for choice in choices)
        problems.append(_Problem(where, "value", f"expected one of {shown}, got {value!r}"))
        return None
    if origin is list:
        if not isinstance(value, list):
            problems.append(_Problem(where, "value", f"expected a list, got {value!r}"))
            return None
        (item,) = typing.get_args(hint)
        before = len(problems)
        items = [_coerce(v, item, f"{where}[{i}]", problems) for i, v in enumerate(value)]
        return items if len(problems) == before else None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        problems.append(_Problem(where, "value", f"expected {hint.__name__}, got {value!r}"))
        return None
    return value
