"""Dilated ResNet backbones: the deep-stem variant EMANet used, and torchvision's stem as an option.

The official EMANet backbone is PyTorch-Encoding's ResNet (docs/reproducing.md#backbone): a stem of three 3x3 convs
(3->64->64->128), bottlenecks with the stride on the 3x3 conv, output stride 8 or 16 by dilating
layer3/layer4, and multi-grid (1, 2, 4) on layer4 with a first-block rule that gives (2, 8, 16) at OS 8.

Module names follow PyTorch-Encoding (deep stem: ``conv1.{0,1,3,4,6}`` + ``bn1``) and torchvision
(7x7 stem: ``conv1`` + ``bn1``), so both families of ImageNet checkpoints load key for key.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence

import torch
from torch import nn

from emanet.config import ModelConfig, Stem

#: Bottleneck counts per stage, by backbone name. ``resnet_tiny`` is the CPU profile's backbone:
#: the same blocks and dilation rules, one block per stage.
DEPTHS: dict[str, tuple[int, int, int, int]] = {
    "resnet_tiny": (1, 1, 1, 1),
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
}

STEMS: tuple[str, ...] = typing.get_args(Stem)

#: (stride, dilation) of layer3 and layer4 for each supported output stride.
_STAGE_GEOMETRY = {
    8: ((1, 2), (1, 4)),
    16: ((2, 1), (1, 2)),
    32: ((2, 1), (2, 1)),
}


class Bottleneck(nn.Module):
    """ResNet v1b bottleneck: 1x1 -> 3x3 (stride, dilation) -> 1x1, expansion 4."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None
    ):
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def block_dilations(num_blocks: int, dilation: int, multi_grid: Sequence[int] | None) -> list[int]:
    """Per-block dilations of one stage, with the official first-block rule.

    The first block of a dilated stage runs at half the stage dilation (1 for stage dilation 1 or 2,
    2 for 4); later blocks use the stage dilation times their multi-grid factor. This gives layer4 =
    (2, 8, 16) at OS 8 and (1, 4, 8) at OS 16 with multi-grid (1, 2, 4) — docs/reproducing.md#backbone.
    """
    grid = list(multi_grid) if multi_grid else [1] * num_blocks
    if len(grid) < num_blocks:
        grid += [grid[-1]] * (num_blocks - len(grid))
    first = max(1, dilation // 2)
    return [first] + [dilation * grid[i] for i in range(1, num_blocks)]


def _deep_stem() -> nn.Sequential:
    """3x3 convs 3->64 (stride 2) ->64 ->128, named as PyTorch-Encoding names them."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.Conv2d(64, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.Conv2d(64, 128, 3, padding=1, bias=False),
    )


class DilatedResNet(nn.Module):
    """ResNet feature extractor returning layer4's map at the requested output stride.

    The classifier is left out: segmentation never uses it, and checkpoints' ``fc.*`` keys are
    dropped at load time (see :mod:`emanet.models.weights`). Every argument is required (params.yaml's
    ``model`` section holds the values; :meth:`from_config` reads them there): ``depth`` a key of
    :data:`DEPTHS`, ``output_stride`` 8, 16 or 32, ``multi_grid`` layer4's factors (None: all 1), ``stem``
    one of :data:`STEMS`, ``base_width`` layer1's bottleneck width (64 with the deep stem). Raises
    ValueError for a value outside these.
    """

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> DilatedResNet:
        """The backbone ``cfg`` (params.yaml's ``model``) describes, with freshly initialised weights."""
        return cls(cfg.backbone, cfg.output_stride, cfg.multi_grid, cfg.stem, cfg.base_width)

    def __init__(self, depth: str, output_stride: int, multi_grid: Sequence[int] | None, stem: str, base_width: int):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"unknown backbone {depth!r}; choose one of {sorted(DEPTHS)}")
        if output_stride not in _STAGE_GEOMETRY:
            raise ValueError(f"output_stride must be one of {sorted(_STAGE_GEOMETRY)}, got {output_stride}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if stem == "deep" and base_width != 64:
            raise ValueError("the deep stem is fixed at 64-64-128 channels; use base_width=64 with it")
        layers = DEPTHS[depth]
        self.depth, self.stem, self.output_stride = depth, stem, output_stride
        if stem == "deep":
            self.conv1, self.inplanes = _deep_stem(), 128
        else:
            self.conv1 = nn.Conv2d(3, base_width, 7, stride=2, padding=3, bias=False)
            self.inplanes = base_width
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        (s3, d3), (s4, d4) = _STAGE_GEOMETRY[output_stride]
        self.layer1 = self._make_layer(base_width, layers[0], 1, 1, None)
        self.layer2 = self._make_layer(base_width * 2, layers[1], 2, 1, None)
        self.layer3 = self._make_layer(base_width * 4, layers[2], s3, d3, None)
        self.layer4 = self._make_layer(base_width * 8, layers[3], s4, d4, multi_grid)
        self.out_channels = base_width * 8 * Bottleneck.expansion
        self._init_weights()

    def _make_layer(
        self, planes: int, blocks: int, stride: int, dilation: int, multi_grid: Sequence[int] | None
    ) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
        dilations = block_dilations(blocks, dilation, multi_grid)
        modules = [Bottleneck(self.inplanes, planes, stride, dilations[0], downsample)]
        self.inplanes = out
        modules += [Bottleneck(out, planes, 1, d) for d in dilations[1:]]
        return nn.Sequential(*modules)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def dilations(self) -> dict[str, list[int]]:
        """The 3x3 dilation of every bottleneck, per stage (for checks and documentation)."""
        return {
            name: [blk.conv2.dilation[0] for blk in getattr(self, name)]
            for name in ("layer1", "layer2", "layer3", "layer4")
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
