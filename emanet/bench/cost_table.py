"""The costs Table 1 of the paper prints, for the heads the plan declares; torch-free.

The heads measured (:data:`HEAD_SPECS`) are declared by the plan (:mod:`emanet.plan.tables`), next to the tables
schema that validates each row's ``cost`` key; they are re-exported here for ``emanet.bench.complexity``, which
measures them.
"""

from __future__ import annotations

from emanet.plan.tables import HEAD_SPECS

__all__ = ["HEAD_SPECS", "PAPER_TABLE1"]

#: Table 1 of the paper (README of the official code): params, GMACs, memory as printed.
PAPER_TABLE1 = {
    "backbone": {"params": 42.6e6, "macs": 190.6e9, "memory": "2.603G"},
    "ema512": {"params": 10.0e6, "macs": 43.1e9, "memory": "+22.1M"},
    "ema256": {"params": 4.87e6, "macs": 21.1e9, "memory": "+12.3M"},
    "aspp": {"params": 15.5e6, "macs": 63.4e9, "memory": "+66.0M"},
}
