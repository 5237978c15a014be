"""What the pipeline runs, derived from params.yaml once: experiments, datasets, weights, protocols.

Snakemake (``workflow/rules/common.smk``) and the CLI ask this module; ``dvc.yaml`` reads the same
lists from params.yaml directly, and a test checks both pipelines agree. :func:`validate_tables`
checks the ``tables`` section against its schema at load, naming the bad key.
"""

from __future__ import annotations

import re
from pathlib import Path

from emanet.bench import HEAD_SPECS
from emanet.config import Config, ConfigError, resolve
from emanet.data.catalog import WEIGHTS

CONFIDENCE = ("R", "A", "S", "D", "U")
COST_FIELDS = ("params", "macs", "activation_bytes")
_PROTOCOL = re.compile(r"^(ss|ms)(_flip)?(_T(\d+))?$")


def parse_protocol(name: str) -> tuple[bool, bool, int | None]:
    """``ss``, ``ms_flip``, ``ss_T3``... -> (multi_scale, flip, T_eval or None)."""
    match = _PROTOCOL.match(name)
    if not match:
        raise ConfigError(f"unknown evaluation protocol {name!r} (expected ss|ms, optional _flip, optional _T<n>)")
    return match.group(1) == "ms", bool(match.group(2)), int(match.group(4)) if match.group(4) else None


def validate_tables(params: dict) -> None:
    """Every table: a title, columns with a known source, rows naming known experiments and cost keys."""
    experiments = params.get("experiments") or {}
    for name, table in (params.get("tables") or {}).items():
        where = f"tables.{name}"
        for key in ("title", "columns", "rows"):
            if key not in table:
                raise ConfigError(f"missing key '{where}.{key}'")
        unknown = set(table) - {"title", "columns", "rows"}
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
        raise ConfigError(f"{where}.source: expected metric:<protocol> or cost:<{'|'.join(COST_FIELDS)}>, "
                          f"got {column['source']!r}")


def _check_row(row: dict, where: str, keys: set[str], experiments: dict) -> None:
    allowed = {"label", "experiment", "cost", "paper", "confidence", "note"}
    if "label" not in row:
        raise ConfigError(f"missing key '{where}.label'")
    if set(row) - allowed:
        raise ConfigError(f"unknown key '{where}.{sorted(set(row) - allowed)[0]}'")
    if "experiment" in row and row["experiment"] not in experiments:
        raise ConfigError(f"{where}.experiment: {row['experiment']!r} is not in experiments")
    if "cost" in row and row["cost"] not in (*HEAD_SPECS, "backbone"):
        raise ConfigError(f"{where}.cost: {row['cost']!r} is not one of backbone, {', '.join(HEAD_SPECS)}")
    bad = set(row.get("paper") or {}) - keys
    if bad:
        raise ConfigError(f"{where}.paper: {sorted(bad)[0]!r} is not a column of this table")
    if row.get("confidence", "R") not in CONFIDENCE:
        raise ConfigError(f"{where}.confidence: expected one of {CONFIDENCE}")


def experiments(params: dict) -> list[str]:
    """Every experiment the pipeline trains (each once, whatever number of tables shows it)."""
    validate_tables(params)
    return list(params.get("experiments") or {})


def protocols(params: dict, experiment: str) -> list[str]:
    """The evaluation protocols the tables need from ``experiment`` (single-scale always)."""
    needed = {"ss"}
    for table in (params.get("tables") or {}).values():
        metric_columns = [c["source"][len("metric:"):] for c in table["columns"] if c["source"].startswith("metric:")]
        if any(row.get("experiment") == experiment for row in table["rows"]):
            needed.update(metric_columns)
    return sorted(needed, key=lambda p: (p != "ss", p))


def tables_of(params: dict, experiment: str) -> list[str]:
    return sorted(name for name, table in (params.get("tables") or {}).items()
                  if any(row.get("experiment") == experiment for row in table["rows"]))


def configs(params: dict, profile: str | None = None) -> dict[str, Config]:
    return {name: resolve(params, profile, experiment=name) for name in experiments(params)}


def datasets(params: dict, profile: str | None = None) -> list[str]:
    """params.yaml's ``datasets``, checked against what the experiments train on."""
    used = {cfg.data.dataset for cfg in configs(params, profile).values()}
    listed = set(params.get("datasets") or [])
    if listed != used:
        raise ConfigError(f"datasets: lists {sorted(listed)} but the experiments use {sorted(used)}")
    return sorted(used)


def weights_name(cfg: Config) -> str:
    """The catalog entry of the ImageNet checkpoint for this backbone and stem."""
    name = f"imagenet-{cfg.model.backbone}" + ("" if cfg.model.stem == "deep" else "-torchvision")
    if name not in WEIGHTS:
        raise ConfigError(f"model.pretrained=imagenet: no ImageNet checkpoint for {cfg.model.backbone} "
                          f"with the {cfg.model.stem} stem")
    return name


def weights(params: dict, profile: str | None = None) -> list[str]:
    return sorted({weights_name(c) for c in configs(params, profile).values() if c.model.pretrained == "imagenet"})


def pretrained_path(cfg: Config) -> str | None:
    """model.pretrained as a file path: ``imagenet`` means the catalog's checkpoint in sources.weights_dir."""
    if cfg.model.pretrained != "imagenet":
        return cfg.model.pretrained
    return str(Path(cfg.sources.weights_dir) / WEIGHTS[weights_name(cfg)].checkpoint_name)
