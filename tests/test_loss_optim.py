"""The official loss normalisation, parameter groups and poly schedule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from emanet.engine.optim import param_groups, poly_lr, set_lr
from emanet.models import build_model
from emanet.models.loss import segmentation_loss


def test_all_pixels_loss_counts_ignored_pixels_as_zero():
    logits = torch.randn(2, 4, 3, 5)
    target = torch.randint(0, 4, (2, 3, 5))
    target[0, 0, :] = 255  # 5 of 15 pixels ignored in image 0
    logp = F.log_softmax(logits, dim=1)
    per_image = []
    for b in range(2):
        total = sum(-logp[b, target[b, i, j], i, j] for i in range(3) for j in range(5) if target[b, i, j] != 255)
        per_image.append(total / 15)
    expected = sum(per_image) / 2
    torch.testing.assert_close(segmentation_loss(logits, target, 255, "all_pixels"), expected)
    valid = segmentation_loss(logits, target, 255, "valid_pixels")
    torch.testing.assert_close(valid, F.cross_entropy(logits, target, ignore_index=255))
    assert valid > segmentation_loss(logits, target, 255, "all_pixels")


def test_unknown_loss_normalization_is_refused():
    with pytest.raises(ValueError, match="normalization"):
        segmentation_loss(torch.randn(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 255, "sum")


def test_loss_normalizations_are_the_configs_choices_and_have_no_default():
    import inspect
    import typing

    from emanet.config import LossNormalization
    from emanet.models.loss import NORMALIZATIONS

    assert NORMALIZATIONS == typing.get_args(LossNormalization) == ("all_pixels", "valid_pixels")
    defaults = {p.name: p.default for p in inspect.signature(segmentation_loss).parameters.values()}
    assert defaults["normalization"] is inspect.Parameter.empty  # params.yaml's train.loss_normalization decides
    with pytest.raises(TypeError, match="normalization"):
        segmentation_loss(torch.randn(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 255)


def test_param_groups_follow_the_official_split(tiny_config):
    model = build_model(tiny_config.model, num_classes=21)
    groups = {g["name"]: g for g in param_groups(model, lr=0.009, weight_decay=1e-4)}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    assert groups["weights"]["weight_decay"] == 1e-4 and groups["weights"]["lr"] == 0.009
    assert groups["norm_weights"]["weight_decay"] == 0 and groups["norm_weights"]["lr"] == 0.009
    assert groups["biases"]["weight_decay"] == 0 and groups["biases"]["lr"] == pytest.approx(0.018)
    unit = next(model.ema_units())
    assert id(model.head.classifier.weight) in ids["weights"]
    assert id(model.head.classifier.bias) in ids["biases"]
    assert id(model.backbone.bn1.weight) in ids["norm_weights"] and id(model.backbone.bn1.bias) in ids["biases"]
    assert id(unit.conv_in.weight) not in set().union(*ids.values()), "conv_in is never trained officially"
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set().union(*ids.values()) == trainable
    assert sum(len(v) for v in ids.values()) == len(trainable), "each parameter in exactly one group"


def test_poly_schedule_steps_every_ten_iterations():
    assert poly_lr(0.009, 0, 30000) == 0.009
    assert poly_lr(0.009, 9, 30000) == 0.009
    assert poly_lr(0.009, 10, 30000) == pytest.approx(0.009 * (1 - 10 / 30000) ** 0.9)
    assert poly_lr(0.009, 29999, 30000) == pytest.approx(0.009 * (1 - 29990 / 30000) ** 0.9)
    assert poly_lr(0.009, 15, 100, step_every=1) == pytest.approx(0.009 * 0.85**0.9)


def test_set_lr_keeps_the_bias_multiplier(tiny_config):
    model = build_model(tiny_config.model, num_classes=3)
    opt = torch.optim.SGD(param_groups(model, 0.01, 1e-4), lr=0.01, momentum=0.9)
    set_lr(opt, 0.005)
    assert sorted(g["lr"] for g in opt.param_groups) == [0.005, 0.005, 0.01]
