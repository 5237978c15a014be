"""The schema of params.yaml's ``figures`` section, checked at load with the tables, each error naming the bad
key; torch-free.

A figure sits beside the table it names (``table``, a key of ``tables``) and is written as
``report/figures/<name>.png``. Its ``kind`` says what it draws:

- ``bars``: one bar per row of ``table`` for its column ``column``; with ``group_by`` (a dotted config key,
  e.g. ``model.ema.maintenance``) the bars are coloured by each row's run's value of it, named in the legend
  by ``groups`` (value -> legend name; a value not listed is shown as it is) under ``legend``.
- ``lines``: one line per row of ``table`` over its columns, which are all ``metric:<protocol>`` columns with
  an evaluation T (``ss_T<n>``): x = T_eval; the paper's values as stars.
- ``per_class``: the IoU per class of the run ``experiment`` under ``protocol`` (default ``ss``).
- ``predictions``: image, ground truth and prediction of the run ``experiment`` (its ``samples.npz``).
- ``responsibilities``: the responsibility maps of a few bases of the run ``experiment`` (its ``samples.npz``).

A run figure's ``experiment`` must be a row of its ``table`` (the caption names the run by that row's label).
Every kind takes an optional ``title`` (written in the PNG) and ``caption`` (under it in the report), which may
name ``{label}`` (the row's label), ``{experiment}`` and ``{split}``. Besides the declared figures, the report
draws the training curves of every table with runs (``training_<table>.png``).
"""

from __future__ import annotations

import string

from emanet.config import NAME_PATTERN, NAME_RULE, RESERVED, ConfigError, flatten
from emanet.protocols import Protocol

#: Each kind's keys beyond ``kind``, ``table``, ``title``, ``caption``: (required, optional).
KINDS: dict[str, tuple[set[str], set[str]]] = {
    "bars": ({"column"}, {"group_by", "groups", "legend"}),
    "lines": (set(), set()),
    "per_class": ({"experiment"}, {"protocol"}),
    "predictions": ({"experiment"}, set()),
    "responsibilities": ({"experiment"}, set()),
}
#: The kinds that draw one run (its ``experiment``) rather than a whole table.
RUN_KINDS = ("per_class", "predictions", "responsibilities")
#: The placeholders a title or caption may name.
PLACEHOLDERS = ("label", "experiment", "split")
#: What a run figure says when params.yaml gives no ``title`` / ``caption`` (a table figure: its table's title).
DEFAULT_TEXT = {
    "per_class": (
        "Per-class IoU, {experiment} (label order)",
        "Per-class IoU of {label} (label order; absent classes marked)",
    ),
    "predictions": (
        "Qualitative predictions of {experiment} (single scale)",
        "Predictions of {label}, {split} images by id",
    ),
    "responsibilities": (
        "Responsibilities Z of the most used distinct bases",
        "Responsibility maps of distinct bases of {label}, one colour scale",
    ),
}
#: The prefix of the derived training-curve figures' names, which a declared figure may not take.
TRAINING_PREFIX = "training_"


def validate_figures(params: dict) -> None:
    """Every figure of ``params['figures']``: a valid name, a known ``kind`` with its keys, a ``table`` of
    ``tables``, a ``column`` of that table, an ``experiment`` among its rows, a protocol the grammar reads,
    titles naming only :data:`PLACEHOLDERS`, and a ``group_by`` among the dotted keys of the top-level
    config sections. Raises ConfigError naming the key (``figures.<name>.<key>``) and what it expects."""
    config_keys = set(flatten({k: v for k, v in params.items() if k not in RESERVED}))
    figures = params.get("figures") or {}
    if not isinstance(figures, dict):
        raise ConfigError(f"figures: expected a mapping of figure names to figures, got {type(figures).__name__}")
    tables = params.get("tables") or {}
    for name, figure in figures.items():
        where = f"figures.{name}"
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name.startswith(TRAINING_PREFIX):
            raise ConfigError(
                f"{where}: a figure's name becomes report/figures/<name>.png, so it must be {NAME_RULE}, "
                f"and not start with {TRAINING_PREFIX!r} (the training curves' names)"
            )
        if not isinstance(figure, dict):
            raise ConfigError(f"{where}: expected a mapping (kind, table, ...), got {type(figure).__name__}")
        kind = figure.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{where}.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        required, optional = KINDS[kind]
        for key in sorted({"table"} | required):
            if key not in figure:
                raise ConfigError(
                    f"missing key '{where}.{key}' (a {kind} figure needs {', '.join(sorted(required | {'table'}))})"
                )
        allowed = {"kind", "table", "title", "caption"} | required | optional
        unknown = set(figure) - allowed
        if unknown:
            raise ConfigError(
                f"unknown key '{where}.{sorted(unknown)[0]}' (a {kind} figure takes {', '.join(sorted(allowed))})"
            )
        table = tables.get(figure["table"])
        if table is None:
            raise ConfigError(
                f"{where}.table: {figure['table']!r} is not a key of tables (tables: {', '.join(tables)})"
            )
        for key in ("title", "caption"):
            if key in figure:
                _check_text(figure[key], f"{where}.{key}")
        _CHECKS[kind](figure, table, where, config_keys)


def run_protocols(params: dict, run: str) -> set[str]:
    """The protocols the (validated) figures need evaluated of ``run``: each ``per_class`` figure's ``protocol``
    (``ss`` when it gives none) whose ``experiment`` is ``run``; :func:`emanet.plan.schedule.protocols` adds
    them to what the tables need, so a figure is never left without its evaluation."""
    return {
        figure.get("protocol", "ss")
        for figure in (params.get("figures") or {}).values()
        if isinstance(figure, dict) and figure.get("kind") == "per_class" and figure.get("experiment") == run
    }


def _check_text(text: object, where: str) -> None:
    if not isinstance(text, str):
        raise ConfigError(f"{where}: expected text, got {type(text).__name__}")
    try:
        named = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
    except ValueError as error:
        raise ConfigError(f"{where}: {error} (write a literal brace as {{{{ or }}}})") from None
    bad = named - set(PLACEHOLDERS)
    if bad:
        raise ConfigError(
            f"{where}: {{{sorted(bad)[0]}}} is not one of {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
        )


def _check_bars(figure: dict, table: dict, where: str, config_keys: set[str]) -> None:
    keys = [c["key"] for c in table["columns"]]
    if figure["column"] not in keys:
        raise ConfigError(
            f"{where}.column: {figure['column']!r} is not a column of tables.{figure['table']} ({', '.join(keys)})"
        )
    group_by = figure.get("group_by")
    if group_by is not None and group_by not in config_keys:
        raise ConfigError(f"{where}.group_by: {group_by!r} is not a config key (e.g. model.ema.maintenance)")
    if "groups" in figure and (group_by is None or not isinstance(figure["groups"], dict)):
        raise ConfigError(
            f"{where}.groups: a mapping of {group_by or 'group_by'} values to legend names, with group_by"
        )
    if "legend" in figure and not isinstance(figure["legend"], str):
        raise ConfigError(f"{where}.legend: expected text")


def _check_lines(figure: dict, table: dict, where: str, config_keys: set[str]) -> None:
    for i, column in enumerate(table["columns"]):
        kind, _, protocol = column["source"].partition(":")
        if kind != "metric" or Protocol.parse(protocol).stages is None:
            raise ConfigError(
                f"{where}: tables.{figure['table']}.columns[{i}] ({column['source']}) has no evaluation T; a lines "
                "figure plots columns metric:<protocol>_T<n> over T_eval"
            )


def _check_run(figure: dict, table: dict, where: str, config_keys: set[str]) -> None:
    runs = [row["experiment"] for row in table["rows"] if "experiment" in row]
    if figure["experiment"] not in runs:
        raise ConfigError(
            f"{where}.experiment: {figure['experiment']!r} is not a run of tables.{figure['table']} "
            f"({', '.join(runs) or 'no rows with an experiment'})"
        )
    if "protocol" in figure:
        try:
            Protocol.parse(figure["protocol"])
        except ConfigError as error:
            raise ConfigError(f"{where}.protocol: {error}") from None


_CHECKS = {
    "bars": _check_bars,
    "lines": _check_lines,
    "per_class": _check_run,
    "predictions": _check_run,
    "responsibilities": _check_run,
}
