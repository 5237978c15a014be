"""The heads Table 1 of the paper compares, and the costs it prints; torch-free.

The plan (``emanet.pipeline``) validates each table row's ``cost`` key against these names when params.yaml is
loaded, and Snakemake imports the plan in every job it starts: keeping torch out of this module keeps that start-up
short. ``emanet.bench.complexity`` measures the costs.
"""

from __future__ import annotations

#: Table 1 of the paper (README of the official code): params, GMACs, memory as printed.
PAPER_TABLE1 = {
    "backbone": {"params": 42.6e6, "macs": 190.6e9, "memory": "2.603G"},
    "ema512": {"params": 10.0e6, "macs": 43.1e9, "memory": "+22.1M"},
    "ema256": {"params": 4.87e6, "macs": 21.1e9, "memory": "+12.3M"},
    "aspp": {"params": 15.5e6, "macs": 63.4e9, "memory": "+66.0M"},
}

#: Heads of the cost table: name -> (head kind, C).
HEAD_SPECS = {
    "ema512": ("ema", 512),
    "ema256": ("ema", 256),
    "fcn": ("fcn", 512),
    "nonlocal": ("nonlocal", 512),
    "a2": ("a2", 512),
    "aspp": ("aspp", 512),
}
