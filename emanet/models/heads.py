"""Segmentation heads in one frame, so that only the attention block differs between them.

Every head is: ``fc0`` (reduce the backbone map to C channels) -> ``block`` (EMA unit, Non-local, A²,
or nothing for the FCN baseline) -> ``fc1`` (3x3 C -> 256 + BN + ReLU) -> Dropout2d -> 1x1 classifier,
the official EMANet head layout (docs/reproducing.md#the-ema-head). DeepLabV3's head puts torchvision's ASPP in ``fc0``.

``overhead`` is what Table 1 counts as a method's cost on top of the backbone: ``fc0`` plus the block
(docs/reproducing.md#counting-flops-and-parameters);
``fc1`` and the classifier are shared by every method and not counted.
"""

from __future__ import annotations

import typing

from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from emanet.config import Head, ModelConfig
from emanet.models.attention import DoubleAttentionBlock, NonLocalBlock
from emanet.models.ema import EMAUnit

HEADS: tuple[str, ...] = typing.get_args(Head)

#: ASPP atrous rates scale with the output stride (DeepLabV3: 6/12/18 at OS 16, doubled at OS 8).
_ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """Conv (no bias) + BN + ReLU, the building block of every head."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SegHead(nn.Module):
    """fc0 -> block -> fc1 -> dropout -> classifier; returns logits at the feature resolution."""

    def __init__(
        self, fc0: nn.Module, block: nn.Module, channels: int, num_classes: int, dropout: float, mid_channels: int = 256
    ):
        super().__init__()
        self.fc0 = fc0
        self.block = block
        self.fc1 = conv_bn_relu(channels, mid_channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(mid_channels, num_classes, 1)

    @property
    def overhead(self) -> nn.Sequential:
        """The modules Table 1 charges to the method: fc0 and the attention block."""
        return nn.Sequential(self.fc0, self.block)

    def forward(self, x):
        return self.after_fc0(self.fc0(x))

    def after_fc0(self, reduced):
        """block -> fc1 -> dropout -> classifier on fc0's output: evaluation computes fc0 (which does not
        depend on the EMA unit's T_eval) once and this part once per T_eval."""
        return self.classifier(self.dropout(self.fc1(self.block(reduced))))


def build_head(cfg: ModelConfig, in_channels: int, num_classes: int) -> SegHead:
    """The head ``cfg.head`` (one of :data:`HEADS`) on an ``in_channels`` backbone map, for ``num_classes``.

    From ``cfg``: ``head_channels`` (C), ``dropout``, ``output_stride`` (ASPP's rates), ``ema`` and
    ``bn_momentum`` (the EMA unit's output BatchNorm; :func:`emanet.models.segmentor.build_model` sets every
    BatchNorm's afterwards). ASPP has no dropout (DeepLabV3's head). Raises ValueError for an unknown head.
    """
    kind, channels = cfg.head, cfg.head_channels
    if kind == "aspp":
        aspp = ASPP(in_channels, list(_ASPP_RATES[cfg.output_stride]), out_channels=256)
        return SegHead(aspp, nn.Identity(), 256, num_classes, dropout=0.0)
    fc0 = conv_bn_relu(in_channels, channels)
    if kind == "ema":
        block = EMAUnit(channels, cfg.ema, cfg.bn_momentum)
    elif kind == "fcn":
        block = nn.Identity()
    elif kind == "nonlocal":
        block = NonLocalBlock(channels)
    elif kind == "a2":
        block = DoubleAttentionBlock(channels)
    else:
        raise ValueError(f"unknown head {kind!r}; choose one of {HEADS}")
    return SegHead(fc0, block, channels, num_classes, cfg.dropout)
