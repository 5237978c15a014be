"""The costs Table 1 of the paper prints, for the heads the plan declares; torch-free.

The heads measured (:data:`HEAD_SPECS`) are declared by the plan (:mod:`emanet.plan.tables`), next to the tables
schema that validates each row's ``cost`` key; they are re-exported here for ``emanet.bench.complexity``, which
measures them.
"""

from __future__ import annotations

from emanet.plan.tables import HEAD_SPECS

__all__ = ["HEAD_SPECS", "MIB", "PAPER_TABLE1", "in_table1_setting", "memory_explanation"]

#: Table 1 of the paper (README of the official code): params, GMACs, memory as printed.
PAPER_TABLE1 = {
    "backbone": {"params": 42.6e6, "macs": 190.6e9, "memory": "2.603G"},
    "ema512": {"params": 10.0e6, "macs": 43.1e9, "memory": "+22.1M"},
    "ema256": {"params": 4.87e6, "macs": 21.1e9, "memory": "+12.3M"},
    "aspp": {"params": 15.5e6, "macs": 63.4e9, "memory": "+66.0M"},
}


def in_table1_setting(result: dict) -> bool:
    """Whether a :func:`complexity` result was counted in Table 1's setting (resnet101, 513x513, OS 8, K=64,
    T=3), the only one the paper's costs can be compared with."""
    s = result["setting"]
    return (s["backbone"], s["size"], s["output_stride"], s["num_bases"], s["stages"]) == ("resnet101", 513, 8, 64, 3)


MIB = 2**20


def memory_explanation(result: dict) -> list[str]:
    """Why Table 1's memory column mixes two measures, with this run's numbers (Table 1's setting only)."""
    heads, backbone = result["heads"], result["backbone"]
    if "module_output_bytes" not in backbone:
        return ["Memory: this complexity.json predates the module-output measure; rerun `emanet bench complexity`."]
    mib = {k: heads[k]["module_output_bytes"] / MIB for k in heads}
    values = {k: heads[k]["activation_bytes"] / 4e6 for k in heads}
    return [
        "Memory: Table 1 does not state its method, and its rows use two. Its backbone (2.603G) and DeeplabV3 "
        f"(+66.0M) rows are torchstat's total memory in MiB (each module's output, fp32): "
        f"{backbone['module_output_bytes'] / MIB / 1000:.3f}G and +{mib['aspp']:.1f}M here. Its EMANet rows "
        f"(+22.1M, +12.3M) are the fp32 values newly allocated by the head's forward: {values['ema512']:.2f}M and "
        f"{values['ema256']:.2f}M here, where torchstat's rule gives +{mib['ema512']:.1f}M and +{mib['ema256']:.1f}M.",
        f"Under one measure DeeplabV3 needs {mib['aspp'] / mib['ema512']:.1f}x EMANet (512)'s memory (torchstat: "
        f"{mib['aspp']:.1f} vs {mib['ema512']:.1f} MiB) or {values['aspp'] / values['ema512']:.2f}x (allocations: "
        f"{values['aspp']:.1f}M vs {values['ema512']:.1f}M values), not the 3x the paper's column suggests.",
        "torchstat sees modules only: the EM iterations and our EMA unit's conv_in (a function call) are not in "
        "its figure; the official unit's conv1 module would add one C x 65 x 65 map.",
    ]
