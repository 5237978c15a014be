"""The report's notes, written once: report.md, report.html and the per-table files all render these
plain-text sentences (Markdown list items, HTML ``<li>`` with the text escaped, LaTeX footnote lines)."""

from __future__ import annotations

from emanet.bench.cost_table import in_table1_setting, memory_explanation
from emanet.report.tables import IMPORTED, NOT_PUBLISHED, Table

#: The paper's confidence letters (docs/reproducing.md#confidence-letters), in the order of
#: emanet.plan.tables.CONFIDENCE.
CONFIDENCE_LETTERS = {
    "R": "the official repository",
    "A": "the author (issues, blog)",
    "S": "a secondary source (aggregators, third-party code)",
    "D": "derived by us",
    "U": "unconfirmed",
}


def general_notes() -> list[str]:
    """How to read every table: cells, differences, confidence, links, costs and their units."""
    letters = ", ".join(f"[{k}] {v}" for k, v in CONFIDENCE_LETTERS.items())
    return [
        "Each cell reads ours / paper (Δ). Δ is ours minus the paper's: mIoU points for mIoU columns, percent of "
        "the paper's value for the cost columns (FLOPs, memory, params).",
        f"{NOT_PUBLISHED}: the paper published no value. –: nothing of ours is expected (a row not reimplemented). "
        "missing: the run's file is absent (report.json and the HTML tooltip say which).",
        f"Confidence of the paper's value (docs/reproducing.md#confidence-letters): {letters}.",
        f"{IMPORTED}: the run holds weights imported with `emanet import-weights`, not weights trained here.",
        "Each of our numbers comes from a run folder under runs/ or from bench/complexity.json; in report.html it "
        "links there and its tooltip gives the MLflow run id; report.json lists both for every cell.",
        "Costs (FLOPs, memory, params) are always Table 1's setting (ResNet-101, 513x513, OS 8, K=64, T=3; each "
        "table's Costs line says what was counted), whatever the profile: they are counted on tensor shapes by "
        "`emanet bench complexity`, not measured on the runs.",
        "FLOPs are multiply-accumulates by the m·n·p rule (the author's counting, EMANet#46). A leading + marks a "
        "head's overhead on top of the backbone (fc0 + attention block).",
        "Memory: MiB of every module's output in one fp32 inference forward of one image (torchstat's rule); "
        "G is a thousand MiB, as Table 1 prints it.",
    ]


def table_notes(table: Table, complexity: dict | None) -> list[str]:
    """What one table's numbers need said: the memory measure where the table has a memory column."""
    fields = {c["source"].partition(":")[2] for c in table.columns if c["source"].startswith("cost:")}
    if complexity is None or not fields & {"module_output_bytes", "activation_bytes"}:
        return []
    if "activation_bytes" in fields:
        return [
            "Memory (this column): bytes newly allocated by one fp32 inference forward; heads in millions of "
            "fp32 values, the backbone in bytes (`emanet bench complexity` explains)."
        ]
    if not in_table1_setting(complexity):
        return [
            "The costs were counted outside Table 1's setting (resnet101, 513x513, OS 8, K=64, T=3): "
            "their Δ compares different things; rerun `emanet bench complexity` with its defaults."
        ]
    return memory_explanation(complexity)
