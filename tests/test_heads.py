"""Every head in the common frame, at output strides 8 and 16, inside the full segmentor."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from emanet.models import build_model
from emanet.models.ema import EMAUnit
from emanet.models.heads import HEADS
from tests.helpers.models import model_config


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("head", HEADS)
def test_every_head_gives_full_resolution_logits(tiny_config, head, output_stride):
    cfg = dataclasses.replace(tiny_config.model, head=head, output_stride=output_stride)
    model = build_model(cfg, num_classes=21)
    x = torch.randn(2, 3, 65, 81)
    model.train()
    logits = model(x)
    assert logits.shape == (2, 21, 65, 81)
    logits.mean().backward()
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 21, 65, 81)
    feats = model.backbone(x[:1])
    assert feats.shape[-1] == (81 - 1) // output_stride + 1


def test_logits_are_upsampled_with_align_corners(tiny_config):
    model = build_model(tiny_config.model, num_classes=5).eval()
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        low = model.head(model.backbone(x))
        full = model(x)
    assert torch.allclose(full[..., 0, 0], low[..., 0, 0]) and torch.allclose(full[..., -1, -1], low[..., -1, -1]), (
        "align_corners=True keeps the corner values"
    )


def test_bn_momentum_is_applied_everywhere(tiny_config):
    cfg = dataclasses.replace(tiny_config.model, bn_momentum=3e-4, head="aspp")
    model = build_model(cfg, num_classes=3)
    moms = {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert moms == {3e-4}


def test_eval_stages_sets_the_ema_units_t_eval(tiny_config):
    model = build_model(tiny_config.model, num_classes=3)
    (unit,) = list(model.ema_units())
    assert isinstance(unit, EMAUnit) and unit.stages == tiny_config.model.ema.stages
    unit.eval_stages = 7  # what evaluation sets per protocol (Fig. 4's T_eval axis)
    model.eval()
    assert unit.active_stages == 7


def test_ema_head_layout_is_the_official_one():
    from emanet.models.heads import build_head

    head = build_head(model_config(head="ema", head_channels=512), 2048, 21)
    assert head.fc0[0].kernel_size == (3, 3) and head.fc0[0].bias is None and head.fc0[0].out_channels == 512
    assert head.fc1[0].out_channels == 256 and head.dropout.p == 0.1
    assert head.classifier.bias is not None and head.classifier.kernel_size == (1, 1)
    unit = head.block
    assert unit.conv_in.bias is not None and unit.conv_out[0].bias is None
