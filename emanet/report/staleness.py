"""Stale marks on the report's cells: a value whose run is out of date with the code, settings or data
(:func:`emanet.runs.status.status`, the same check as ``emanet status``) keeps its number, followed by
:data:`STALE`, and the table lists the reason under it (:func:`emanet.report.tables.pending`)."""

from __future__ import annotations

from typing import Any

from emanet.report.tables import Table

#: Beside a value whose run or evaluation is stale.
STALE = "(stale)"


def mark_stale(tables: list[Table], found: dict[str, Any]) -> int:
    """Mark every metric cell of ``tables`` whose (run, protocol) :func:`emanet.runs.status.cell_staleness`
    finds stale in ``found`` (a :func:`emanet.runs.status.status` result): ``text`` gets :data:`STALE`,
    ``missing`` the reason and the fix. Cells without a value are left as they are. Returns how many."""
    from emanet.runs.status import cell_staleness

    marked = 0
    for table in tables:
        for row in table.rows:
            for column in table.columns:
                kind, _, protocol = column["source"].partition(":")
                cell = row.cells[column["key"]]
                if kind != "metric" or not row.experiment or not cell.text or cell.missing:
                    continue
                reason = cell_staleness(found, row.experiment, protocol)
                if reason:
                    cell.text = f"{cell.text} {STALE}"
                    cell.missing = f"{STALE} {reason}; rerun the pipeline (`emanet status` lists every stale run)"
                    marked += 1
    return marked
