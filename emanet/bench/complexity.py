"""Cost of the backbone and each head, counted the way Table 1 counts it, and their speed here.

Counting rule (author, EMANet#46; docs/reproducing.md#counting-flops-and-parameters): MACs, with
k²·C_in·C_out·H·W per convolution and
m·n·p per matrix product, so the EM iterations' bmm/einsum products count too (mmcv's counter misses
them). ``torch.utils.flop_counter.FlopCounterMode`` applies exactly that rule (it reports 2·MACs) and
sees every matmul at dispatch level. Everything runs on the ``meta`` device: shapes only, no arithmetic,
so the ResNet-101 count at 513x513 takes well under a second.

A head's overhead is ``fc0`` + its attention block (docs/reproducing.md#counting-flops-and-parameters).
Its parameters include the EMA
bases, a buffer that Table 1 counts (C·K). Memory is measured two ways, both in one fp32 inference
forward of one image:

- ``activation_bytes``: the bytes of every tensor an operator newly allocates (views and in-place
  results excluded). Read as fp32 values (/4), it reproduces Table 1's EMANet rows (+22.1M, +12.3M).
- ``module_output_bytes``: torchstat's "Total memory" rule (the counter the author names in EMANet#46):
  the output size of every leaf module, each module counted once with its last call's output
  (a ReLU reused three times in a bottleneck counts once), ``nn.Identity`` excluded. In MiB it
  reproduces Table 1's backbone (2.603G = 2603 MiB) and DeeplabV3 (+66.0M) rows; it sees only
  modules, so operations done with functions (the EM iterations, our EMA unit's ``conv_in``) are
  not in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.benchmark import Timer
from torch.utils.flop_counter import FlopCounterMode

from emanet.bench.cost_table import HEAD_SPECS, MIB, PAPER_TABLE1, in_table1_setting, memory_explanation
from emanet.config import EMAConfig, ModelConfig
from emanet.models.heads import build_head
from emanet.models.resnet import DilatedResNet

_BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class Cost:
    params: int
    macs: int
    activation_bytes: int
    module_output_bytes: int

    def as_dict(self) -> dict[str, int]:
        return {
            "params": self.params,
            "macs": self.macs,
            "activation_bytes": self.activation_bytes,
            "module_output_bytes": self.module_output_bytes,
        }


class _AllocatedBytes(TorchDispatchMode):
    """Sums the bytes of every tensor an operator newly creates (not views, not in-place results)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func._schema.is_mutable and not any(r.alias_info for r in func._schema.returns):
            self.total += sum(t.numel() * t.element_size() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


class _LeafOutputs:
    """torchstat's memory rule: bytes of each leaf module's last output (nn.Identity excluded)."""

    def __init__(self, module: nn.Module):
        self.last: dict[str, int] = {}
        self.handles = [
            leaf.register_forward_hook(self._hook(name))
            for name, leaf in module.named_modules()
            if not list(leaf.children()) and not isinstance(leaf, nn.Identity)
        ]

    def _hook(self, name: str):
        def record(_module, _inputs, output):
            self.last[name] = sum(
                t.numel() * t.element_size() for t in tree_leaves(output) if isinstance(t, torch.Tensor)
            )

        return record

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    @property
    def total(self) -> int:
        return sum(self.last.values())


def count_params(module: nn.Module) -> int:
    """Parameters plus state buffers that are part of the model (the EMA bases), not BN statistics."""
    buffers = sum(b.numel() for name, b in module.named_buffers() if not name.endswith(_BN_STATISTICS))
    return sum(p.numel() for p in module.parameters()) + buffers


def measure(module: nn.Module, input_shape: tuple[int, ...]) -> Cost:
    """MACs and both memory measures of one inference forward on ``meta`` tensors, and the parameter count."""
    module = module.to("meta").eval()
    x = torch.empty(input_shape, device="meta")
    with (
        torch.no_grad(),
        FlopCounterMode(display=False) as flops,
        _AllocatedBytes() as written,
        _LeafOutputs(module) as outputs,
    ):
        module(x)
    return Cost(count_params(module), flops.get_total_flops() // 2, written.total, outputs.total)


def costed_model(
    backbone: str, output_stride: int, stem: str, head: str, channels: int, num_bases: int = 64, stages: int = 3
) -> ModelConfig:
    """The official network (docs/reproducing.md#the-ema-head) in the setting a cost is counted in, as a
    :class:`ModelConfig`: the arguments are what the cost table varies; the rest is the official recipe,
    of which only the bases' maintenance changes a count (``gradient`` would make them parameters)."""
    ema = EMAConfig(
        num_bases=num_bases,
        stages=stages,
        eval_stages=None,
        momentum=0.9,
        maintenance="moving_average",
        norm="l2",
        renormalize=False,
    )
    return ModelConfig(
        backbone=backbone,
        stem=stem,
        base_width=64,
        output_stride=output_stride,
        multi_grid=[1, 2, 4],
        head=head,
        head_channels=channels,
        dropout=0.1,
        bn_momentum=3e-4,
        pretrained=None,
        ema=ema,
    )


def complexity(
    backbone: str = "resnet101",
    size: int = 513,
    output_stride: int = 8,
    num_bases: int = 64,
    stages: int = 3,
    stem: str = "deep",
) -> dict:
    """The cost table: the backbone's totals and each head's overhead, as plain ints, and ``code.complexity``,
    the digest of the code that counted them (:func:`emanet.runs.code.code_digest`), which ``emanet status``
    compares with the code now."""
    from emanet.runs.code import code_digest

    with torch.device("meta"):
        net = DilatedResNet.from_config(costed_model(backbone, output_stride, stem, "ema", 512))
    feat = (size - 1) // output_stride + 1  # conv arithmetic of the strided stem and stages
    result = {
        "setting": {
            "backbone": backbone,
            "stem": stem,
            "size": size,
            "output_stride": output_stride,
            "feature_size": feat,
            "num_bases": num_bases,
            "stages": stages,
        },
        "backbone": measure(net, (1, 3, size, size)).as_dict(),
        "heads": {},
        "code": {"complexity": code_digest("complexity")},
    }
    for name, (kind, channels) in HEAD_SPECS.items():
        with torch.device("meta"):
            head = build_head(
                costed_model(backbone, output_stride, stem, kind, channels, num_bases, stages), net.out_channels, 21
            )
        result["heads"][name] = measure(head.overhead, (1, net.out_channels, feat, feat)).as_dict()
    return result


def _pct(ours: float, paper: float) -> str:
    return f"{100.0 * (ours - paper) / paper:+.2f}%"


def _notes(result: dict) -> list[str]:
    """What explains the differences from Table 1 (only meaningful in Table 1's own setting)."""
    if not in_table1_setting(result):
        return ["- Table 1's figures are for resnet101 at 513x513, OS 8, K=64, T=3: not comparable here."]
    return (
        [
            "- Backbone MACs count convolutions only; the remaining ~0.4% of the paper's 190.6G is most likely",
            "  BN/ReLU/pooling, which torchstat (the authors' counter) also counts. Parameters match to 0.1%.",
            "- ema256 MACs: the same element-wise operations are the likely remainder of the -0.6%.",
        ]
        + [f"- {line}" for line in memory_explanation(result)]
        + [
            "- DeeplabV3's row is torchvision's ASPP at rates (12, 24, 36); fcn/nonlocal/a2 are not in Table 1.",
        ]
    )


def format_complexity(result: dict) -> str:
    """The cost table beside Table 1's figures, with the explanation of what differs and why."""
    s = result["setting"]
    lines = [
        f"Cost of {s['backbone']} ({s['stem']} stem) at {s['size']}x{s['size']}, output stride "
        f"{s['output_stride']} (feature map {s['feature_size']}x{s['feature_size']}), K={s['num_bases']}, "
        f"T={s['stages']}. MACs by the m*n*p rule; heads are overheads (fc0 + block).",
        "",
        f"{'module':<10} {'params':>12} {'GMACs':>9} {'act. MB':>9} {'mod. MiB':>9} | {'paper params':>12} "
        f"{'paper G':>8} {'paper mem':>9} | {'d params':>9} {'d MACs':>8}",
    ]
    rows = [("backbone", result["backbone"])] + list(result["heads"].items())
    for name, cost in rows:
        paper = PAPER_TABLE1.get(name)
        left = f"{name:<10} {cost['params']:>12,} {cost['macs'] / 1e9:>9.2f} {cost['activation_bytes'] / 1e6:>9.1f}"
        left += f" {cost['module_output_bytes'] / MIB:>9.1f}" if "module_output_bytes" in cost else f" {'-':>9}"
        if paper:
            right = (
                f" | {paper['params'] / 1e6:>11.2f}M {paper['macs'] / 1e9:>8.1f} {paper['memory']:>9} | "
                f"{_pct(cost['params'], paper['params']):>9} {_pct(cost['macs'], paper['macs']):>8}"
            )
        else:
            right = " | (not in Table 1)"
        lines.append(left + right)
    lines += ["", "Notes:"] + _notes(result)
    return "\n".join(lines)


def latency(
    channels: int = 512, size: int = 65, batch: int = 2, in_channels: int = 2048, min_run_time: float = 1.0
) -> dict:
    """Seconds per forward (eval) and forward+backward (train) of each head's overhead on this machine.

    ``batch`` must be at least 2: ASPP's image-pooling branch has a BatchNorm over a 1x1 map, which
    cannot train on a single image.
    """
    if batch < 2:
        raise ValueError("latency needs --batch >= 2 (ASPP's pooled BatchNorm cannot train on one image)")
    timings: dict[str, dict[str, dict[str, float]]] = {"overhead": {}, "block": {}}
    for name in ("ema", "fcn", "nonlocal", "a2", "aspp"):
        overhead = build_head(costed_model("resnet101", 8, "deep", name, channels), in_channels, 21).overhead
        timings["overhead"][name] = _time(overhead, (batch, in_channels, size, size), min_run_time)
        if name in ("ema", "nonlocal", "a2"):
            timings["block"][name] = _time(overhead[1], (batch, channels, size, size), min_run_time)
    return {
        "setting": {
            "channels": channels,
            "size": size,
            "batch": batch,
            "in_channels": in_channels,
            "threads": torch.get_num_threads(),
        },
        "timings": timings,
    }


def _time(module: nn.Module, shape: tuple[int, ...], min_run_time: float) -> dict[str, float]:
    """Median seconds of an eval forward and of a train forward+backward (torch.utils.benchmark)."""
    x = torch.relu(torch.randn(shape))
    module.eval()
    fwd = Timer("with torch.no_grad(): m(x)", globals={"m": module, "x": x, "torch": torch})
    forward_s = fwd.blocked_autorange(min_run_time=min_run_time).median
    module.train()
    bwd = Timer("m(x).sum().backward()", globals={"m": module, "x": x.clone().requires_grad_(True)})
    return {"forward_s": forward_s, "forward_backward_s": bwd.blocked_autorange(min_run_time=min_run_time).median}


def format_latency(result: dict) -> str:
    s = result["setting"]
    lines = [f"Timings on {s['batch']} images, {s['threads']} threads; ratio = time / EMA time."]
    for part, title, width in (
        ("overhead", "head overhead (fc0 + block)", s["in_channels"]),
        ("block", "attention block alone", s["channels"]),
    ):
        rows = result["timings"][part]
        base = rows["ema"]
        lines += [
            "",
            f"{title}, input {width}x{s['size']}x{s['size']}, C={s['channels']}:",
            f"{'head':<10} {'fwd ms':>9} {'ratio':>6} {'fwd+bwd ms':>11} {'ratio':>6}",
        ]
        for name, v in rows.items():
            lines.append(
                f"{name:<10} {v['forward_s'] * 1e3:>9.1f} {v['forward_s'] / base['forward_s']:>6.2f} "
                f"{v['forward_backward_s'] * 1e3:>11.1f} "
                f"{v['forward_backward_s'] / base['forward_backward_s']:>6.2f}"
            )
    return "\n".join(lines)
