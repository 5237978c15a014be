"""What the pipeline runs, derived from params.yaml once: experiments, datasets, weights, protocols.

Snakemake (``workflow/rules/common.smk``) and the CLI ask this module; ``dvc.yaml`` reads the same
lists from params.yaml directly, and a test checks both pipelines agree. :func:`validate_tables`
checks the ``tables`` section against its schema at load, naming the bad key.
"""

from __future__ import annotations

import re
from pathlib import Path

from emanet.bench.cost_table import HEAD_SPECS
from emanet.config import Config, ConfigError, resolve
from emanet.data.archives.catalog import WEIGHTS

CONFIDENCE = ("R", "A", "S", "D", "U")
COST_FIELDS = ("params", "macs", "activation_bytes", "module_output_bytes")
_PROTOCOL = re.compile(r"^(ss|ms)(_flip)?(_T(\d+))?$")


def parse_protocol(name: str) -> tuple[bool, bool, int | None]:
    """``ss``, ``ms_flip``, ``ss_T3``... -> (multi_scale, flip, T_eval or None)."""
    match = _PROTOCOL.match(name)
    if not match:
        raise ConfigError(f"unknown evaluation protocol {name!r} (expected ss|ms, optional _flip, optional _T<n>)")
    return match.group(1) == "ms", bool(match.group(2)), int(match.group(4)) if match.group(4) else None


def _override(overrides: dict | None, section: str, key: str):
    """``overrides[section][key]`` of one run's entry in params.yaml, None when absent."""
    return ((overrides or {}).get(section) or {}).get(key)


def validate_runs(params: dict) -> None:
    """``finetunes`` each name their parent in ``train.init_from`` and their data in ``data.dataset`` and
    ``eval.dataset`` (DVC reads its dependencies there); ``experiments`` set neither init_from nor
    eval.dataset; names are unique; every chain ends in an experiment."""
    experiments, finetunes = params.get("experiments") or {}, params.get("finetunes") or {}
    both = sorted(set(experiments) & set(finetunes))
    if both:
        raise ConfigError(f"{both[0]!r} is both in experiments and in finetunes")
    for name, overrides in experiments.items():
        if _override(overrides, "train", "init_from") is not None:
            raise ConfigError(
                f"experiments.{name}.train.init_from: a run that starts from another run's weights "
                f"belongs in finetunes (so both orchestrators see the dependency)"
            )
        if _override(overrides, "eval", "dataset") is not None:
            raise ConfigError(
                f"experiments.{name}.eval.dataset: evaluating on another dataset than the training one "
                f"is for finetunes (which state it, so DVC sees the data)"
            )
    for name, overrides in finetunes.items():
        for section in ("data", "eval"):
            if _override(overrides, section, "dataset") is None:
                raise ConfigError(f"missing key 'finetunes.{name}.{section}.dataset' (DVC reads the data from it)")
        _check_chain(name, experiments, finetunes)


def _check_chain(name: str, experiments: dict, finetunes: dict) -> None:
    """Follow init_from from ``name`` to an experiment; a missing or unknown parent or a cycle is an error."""
    seen = [name]
    while seen[-1] in finetunes:
        parent = _override(finetunes[seen[-1]], "train", "init_from")
        if parent is None:
            raise ConfigError(f"missing key 'finetunes.{seen[-1]}.train.init_from' (the run it starts from)")
        if parent not in experiments and parent not in finetunes:
            raise ConfigError(f"finetunes.{seen[-1]}.train.init_from: {parent!r} is not an experiment or finetune")
        if parent in seen:
            raise ConfigError(f"finetunes: {' -> '.join([*seen, parent])} is a cycle")
        seen.append(parent)


def validate_tables(params: dict) -> None:
    """Every table: a title, columns with a known source, rows naming known experiments and cost keys."""
    validate_runs(params)
    experiments = {**(params.get("experiments") or {}), **(params.get("finetunes") or {})}
    for name, table in (params.get("tables") or {}).items():
        where = f"tables.{name}"
        for key in ("title", "columns", "rows"):
            if key not in table:
                raise ConfigError(f"missing key '{where}.{key}'")
        unknown = set(table) - {"title", "paper_setting", "columns", "rows"}
        if unknown:
            raise ConfigError(f"unknown key '{where}.{sorted(unknown)[0]}'")
        keys = set()
        for i, column in enumerate(table["columns"]):
            _check_column(column, f"{where}.columns[{i}]")
            keys.add(column["key"])
        for i, row in enumerate(table["rows"]):
            _check_row(row, f"{where}.rows[{i}]", keys, experiments)


def _check_column(column: dict, where: str) -> None:
    if set(column) != {"key", "label", "source"}:
        raise ConfigError(f"{where}: a column has exactly key, label and source (got {sorted(column)})")
    kind, _, value = column["source"].partition(":")
    if kind == "metric":
        parse_protocol(value)
    elif not (kind == "cost" and value in COST_FIELDS):
        raise ConfigError(
            f"{where}.source: expected metric:<protocol> or cost:<{'|'.join(COST_FIELDS)}>, got {column['source']!r}"
        )


def _check_row(row: dict, where: str, keys: set[str], experiments: dict) -> None:
    allowed = {"label", "experiment", "cost", "paper", "confidence", "note"}
    if "label" not in row:
        raise ConfigError(f"missing key '{where}.label'")
    if set(row) - allowed:
        raise ConfigError(f"unknown key '{where}.{sorted(set(row) - allowed)[0]}'")
    if "experiment" in row and row["experiment"] not in experiments:
        raise ConfigError(f"{where}.experiment: {row['experiment']!r} is not in experiments or finetunes")
    if "cost" in row and row["cost"] not in (*HEAD_SPECS, "backbone"):
        raise ConfigError(f"{where}.cost: {row['cost']!r} is not one of backbone, {', '.join(HEAD_SPECS)}")
    bad = set(row.get("paper") or {}) - keys
    if bad:
        raise ConfigError(f"{where}.paper: {sorted(bad)[0]!r} is not a column of this table")
    if row.get("confidence", "R") not in CONFIDENCE:
        raise ConfigError(f"{where}.confidence: expected one of {CONFIDENCE}")


def experiments(params: dict) -> list[str]:
    """The runs trained from an ImageNet backbone (or from scratch): the ``train`` stage."""
    validate_tables(params)
    return list(params.get("experiments") or {})


def finetunes(params: dict) -> list[str]:
    """The runs that start from another run's weights (``train.init_from``): the ``finetune`` stage."""
    validate_tables(params)
    return list(params.get("finetunes") or {})


def parent(params: dict, run: str) -> str | None:
    """The run a finetune starts from (None for an experiment)."""
    return _override((params.get("finetunes") or {}).get(run), "train", "init_from")


def runs(params: dict) -> list[str]:
    """Every run the pipeline trains and evaluates, each once, whatever number of tables shows it."""
    return experiments(params) + finetunes(params)


def protocols(params: dict, experiment: str) -> list[str]:
    """The evaluation protocols the tables need from ``experiment`` (single-scale always)."""
    needed = {"ss"}
    for table in (params.get("tables") or {}).values():
        metric_columns = [c["source"][len("metric:") :] for c in table["columns"] if c["source"].startswith("metric:")]
        if any(row.get("experiment") == experiment for row in table["rows"]):
            needed.update(metric_columns)
    return sorted(needed, key=lambda p: (p != "ss", p))


def tables_of(params: dict, experiment: str) -> list[str]:
    return sorted(
        name
        for name, table in (params.get("tables") or {}).items()
        if any(row.get("experiment") == experiment for row in table["rows"])
    )


def configs(params: dict, profile: str | None = None) -> dict[str, Config]:
    return {name: resolve(params, profile, experiment=name) for name in runs(params)}


def datasets(params: dict, profile: str | None = None) -> list[str]:
    """params.yaml's ``datasets``, checked against what the runs train and evaluate on."""
    used = {d for cfg in configs(params, profile).values() for d in (cfg.data.dataset, cfg.eval.dataset) if d}
    listed = set(params.get("datasets") or [])
    if listed != used:
        raise ConfigError(f"datasets: lists {sorted(listed)} but the experiments use {sorted(used)}")
    return sorted(used)


def weights_name(cfg: Config) -> str:
    """The catalog entry of the ImageNet checkpoint for this backbone and stem."""
    name = f"imagenet-{cfg.model.backbone}" + ("" if cfg.model.stem == "deep" else "-torchvision")
    if name not in WEIGHTS:
        raise ConfigError(
            f"model.pretrained=imagenet: no ImageNet checkpoint for {cfg.model.backbone} with the {cfg.model.stem} stem"
        )
    return name


def weights(params: dict, profile: str | None = None) -> list[str]:
    return sorted({weights_name(c) for c in configs(params, profile).values() if c.model.pretrained == "imagenet"})


def pretrained_path(cfg: Config) -> str | None:
    """model.pretrained as a file path: ``imagenet`` means the catalog's checkpoint in sources.weights_dir."""
    if cfg.model.pretrained != "imagenet":
        return cfg.model.pretrained
    return str(Path(cfg.sources.weights_dir) / WEIGHTS[weights_name(cfg)].checkpoint_name)
