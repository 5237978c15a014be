"""The schema of params.yaml's ``tables`` section, checked at load, each error naming the bad key; torch-free.

A table has a ``title``, ``columns`` (each ``key``, ``label``, ``source``: ``metric:<protocol>`` in the grammar
of :mod:`emanet.protocols`, or ``cost:<field>`` of :data:`COST_FIELDS`) and ``rows`` (each a ``label`` and
optionally an ``experiment`` of params.yaml's experiments or finetunes, a ``cost`` row of :data:`COST_ROWS`,
the ``paper``'s numbers by column key, a ``confidence`` letter of :data:`CONFIDENCE`, a ``note``).

The cost rows are declared here, with the schema that validates them: ``emanet.bench`` measures what these
name (:data:`HEAD_SPECS`), so the plan imports nothing from the benchmarks.
"""

from __future__ import annotations

from emanet.config import ConfigError
from emanet.plan.figures import validate_figures
from emanet.protocols import Protocol

#: The paper's confidence letters for a published number (docs/reproducing.md#confidence-letters), ``R`` when a
#: row gives none.
CONFIDENCE = ("R", "A", "S", "D", "U")
#: What a ``cost:<field>`` column shows, as ``emanet bench complexity`` measures it per cost row.
COST_FIELDS = ("params", "macs", "activation_bytes", "module_output_bytes")
#: The heads of the cost table (Table 1 of the paper and our additions): name -> (head kind, channels C).
HEAD_SPECS = {
    "ema512": ("ema", 512),
    "ema256": ("ema", 256),
    "fcn": ("fcn", 512),
    "nonlocal": ("nonlocal", 512),
    "a2": ("a2", 512),
    "aspp": ("aspp", 512),
}
#: A row's ``cost`` key: the backbone alone or one head of :data:`HEAD_SPECS`.
COST_ROWS = ("backbone", *HEAD_SPECS)

_TABLE_KEYS = {"title", "paper_setting", "columns", "rows"}
_ROW_KEYS = {"label", "experiment", "cost", "paper", "confidence", "note"}


def validate_tables(params: dict) -> None:
    """Every table of ``params['tables']``: a title, columns with a known source, rows naming known runs
    (keys of ``experiments`` or ``finetunes``) and cost rows. Raises ConfigError naming the key
    (``tables.<name>.rows[<i>].<key>``) and what it expects. The runs themselves are checked by
    :func:`emanet.plan.schedule.validate`."""
    runs = {**(params.get("experiments") or {}), **(params.get("finetunes") or {})}
    for name, table in (params.get("tables") or {}).items():
        where = f"tables.{name}"
        for key in ("title", "columns", "rows"):
            if key not in table:
                raise ConfigError(f"missing key '{where}.{key}'")
        unknown = set(table) - _TABLE_KEYS
        if unknown:
            raise ConfigError(f"unknown key '{where}.{sorted(unknown)[0]}'")
        keys = set()
        for i, column in enumerate(table["columns"]):
            _check_column(column, f"{where}.columns[{i}]")
            keys.add(column["key"])
        for i, row in enumerate(table["rows"]):
            _check_row(row, f"{where}.rows[{i}]", keys, runs)
    validate_figures(params)  # the figures name tables, columns and rows: checked after them


def metric_protocols(table: dict) -> list[str]:
    """The protocol names of a (validated) table's ``metric:<protocol>`` columns, in column order."""
    return [c["source"][len("metric:") :] for c in table["columns"] if c["source"].startswith("metric:")]


def _check_column(column: dict, where: str) -> None:
    if set(column) != {"key", "label", "source"}:
        raise ConfigError(f"{where}: a column has exactly key, label and source (got {sorted(column)})")
    kind, _, value = column["source"].partition(":")
    if kind == "metric":
        try:
            Protocol.parse(value)
        except ConfigError as error:
            raise ConfigError(f"{where}.source: {error}") from None
    elif not (kind == "cost" and value in COST_FIELDS):
        raise ConfigError(
            f"{where}.source: expected metric:<protocol> or cost:<{'|'.join(COST_FIELDS)}>, got {column['source']!r}"
        )


def _check_row(row: dict, where: str, keys: set[str], runs: dict) -> None:
    if "label" not in row:
        raise ConfigError(f"missing key '{where}.label'")
    if set(row) - _ROW_KEYS:
        raise ConfigError(f"unknown key '{where}.{sorted(set(row) - _ROW_KEYS)[0]}'")
    if "experiment" in row and row["experiment"] not in runs:
        raise ConfigError(f"{where}.experiment: {row['experiment']!r} is not in experiments or finetunes")
    if "cost" in row and row["cost"] not in COST_ROWS:
        raise ConfigError(f"{where}.cost: {row['cost']!r} is not one of {', '.join(COST_ROWS)}")
    bad = set(row.get("paper") or {}) - keys
    if bad:
        raise ConfigError(f"{where}.paper: {sorted(bad)[0]!r} is not a column of this table")
    if row.get("confidence", "R") not in CONFIDENCE:
        raise ConfigError(f"{where}.confidence: expected one of {CONFIDENCE}")
