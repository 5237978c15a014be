"""The whole network: backbone + head + upsampling, built from a :class:`ModelConfig`."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from emanet.config import ModelConfig
from emanet.models.ema import EMAUnit
from emanet.models.heads import SegHead, build_head
from emanet.models.resnet import DilatedResNet
from emanet.models.weights import load_backbone_weights


class Segmentor(nn.Module):
    """Backbone features -> head logits -> bilinear upsampling to the input size.

    ``align_corners=True`` as the official code (docs/reproducing.md#the-ema-head); the logits come back at full
    resolution, ready for the loss or the argmax.
    """

    def __init__(self, backbone: DilatedResNet, head: SegHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.backbone(x), x.shape[-2:])

    def decode(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The head on backbone ``features`` (B, C, h, w), logits upsampled to the input ``size`` (B, classes,
        *size): the second half of :meth:`forward`, so that evaluation can run the head several times (one
        per T_eval) on features computed once."""
        return self.upsample(self.head(features), size)

    @staticmethod
    def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Head logits (B, classes, h, w) to the input ``size``: bilinear, ``align_corners=True``."""
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)

    def ema_units(self) -> Iterator[EMAUnit]:
        return (m for m in self.modules() if isinstance(m, EMAUnit))


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    """Give every BatchNorm the same momentum (PyTorch convention: weight of the new statistic)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def build_model(cfg: ModelConfig, num_classes: int) -> Segmentor:
    """Build the configured network and load its ImageNet backbone weights if a file is given."""
    backbone = DilatedResNet.from_config(cfg)
    if cfg.pretrained:
        load_backbone_weights(backbone, cfg.pretrained)
    head = build_head(cfg, backbone.out_channels, num_classes)
    model = Segmentor(backbone, head)
    set_bn_momentum(model, cfg.bn_momentum)
    return model
