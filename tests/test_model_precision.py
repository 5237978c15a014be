"""The whole network at other precisions: float64 end to end (``model.double()``, for gradient checks
and numerical comparisons), and CPU autocast in bfloat16 with the EM iterations kept in float32."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from emanet.models import build_model
from emanet.models.ema import EMAUnit
from emanet.models.heads import HEADS
from emanet.models.loss import segmentation_loss


def _spy_em(model) -> list[tuple[torch.dtype, ...]]:
    """Record (features, Z, mu) dtypes of every EM call of the model's EMA units, which run as usual."""
    seen = []
    for unit in model.modules():
        if isinstance(unit, EMAUnit):

            def recording(x, stages=None, em=unit.em):
                z, mu = em(x, stages)
                seen.append((x.dtype, z.dtype, mu.dtype))
                return z, mu

            unit.em = recording
    return seen


@pytest.mark.parametrize("head", HEADS)
def test_every_head_trains_and_evaluates_in_float64(tiny_config, head):
    cfg = dataclasses.replace(tiny_config.model, head=head)
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=5).double().train()
    seen = _spy_em(model)
    x = torch.randn(2, 3, 33, 41, dtype=torch.float64)
    target = torch.randint(0, 5, (2, 33, 41))
    logits = model(x)
    assert logits.dtype == torch.float64
    loss = segmentation_loss(logits, target, 255, "all_pixels")
    assert loss.dtype == torch.float64
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.dtype == torch.float64 for g in grads)
    assert all(b.dtype == torch.float64 for b in model.buffers() if b.is_floating_point())
    model.eval()
    with torch.no_grad():
        assert model(x).dtype == torch.float64
    if head == "ema":
        assert seen and set(seen) == {(torch.float64,) * 3}, "the EM must not lower float64"
    else:
        assert not seen


def test_float64_model_agrees_with_its_float32_twin(tiny_config):
    """Same weights, same input: the float64 logits are the float32 ones computed more exactly."""
    torch.manual_seed(0)
    model32 = build_model(tiny_config.model, num_classes=5).eval()
    model64 = copy.deepcopy(model32).double()
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        out32, out64 = model32(x), model64(x.double())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out32, atol=1e-4, rtol=1e-4)


def test_gradcheck_of_the_ema_head_in_float64(tiny_config):
    """The EMA head of the tiny model with the gradient-maintained bases, small enough for finite
    differences: analytical and numerical gradients of the input agree in float64."""
    from emanet.models.heads import build_head

    ema = dataclasses.replace(tiny_config.model.ema, maintenance="gradient", num_bases=3, stages=2)
    cfg = dataclasses.replace(tiny_config.model, head="ema", head_channels=4, dropout=0.0, ema=ema)
    torch.manual_seed(0)
    head = build_head(cfg, 6, 3).double().eval()
    x = torch.rand(1, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(head, (x,), eps=1e-6, atol=1e-5)


def test_cpu_autocast_bfloat16_keeps_the_em_in_float32(tiny_config):
    torch.manual_seed(0)
    model = build_model(tiny_config.model, num_classes=5).train()
    seen = _spy_em(model)
    x = torch.randn(2, 3, 33, 33)
    target = torch.randint(0, 5, (2, 33, 33))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
        loss = segmentation_loss(logits, target, 255, "all_pixels")
    assert seen == [(torch.float32, torch.float32, torch.float32)]
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)
    (unit,) = model.ema_units()
    assert unit.bases.dtype == torch.float32


@pytest.mark.parametrize(
    "dtype, expected",
    [
        (torch.bfloat16, torch.float32),
        (torch.float16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
@pytest.mark.parametrize("normalization", ["all_pixels", "valid_pixels"])
def test_loss_is_computed_in_at_least_float32(dtype, expected, normalization):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 7)
    target = torch.randint(0, 4, (2, 6, 7))
    target[0, 0] = 255
    loss = segmentation_loss(logits.to(dtype), target, 255, normalization)
    assert loss.dtype == expected
    reference = segmentation_loss(logits.to(dtype).double(), target, 255, normalization)
    torch.testing.assert_close(loss.double(), reference, atol=1e-6 if expected == torch.float32 else 1e-12, rtol=0)
    if dtype == torch.float32:  # unchanged for float32: the same kernels as before, bit for bit
        per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
        plain = (
            per_pixel.flatten(1).mean(dim=1).mean()
            if normalization == "all_pixels"
            else F.cross_entropy(logits, target, ignore_index=255)
        )
        assert torch.equal(loss, plain)


def test_evaluation_code_keeps_a_float64_model_in_float64(tiny_config):
    """evaluate's own single-scale / MS+flip prediction and the Fig. 5 responsibility maps accept a float64
    model and image and never lower them: the softmax sums and the maps come back in float64."""
    from emanet.engine.evaluate import predict, responsibilities

    torch.manual_seed(0)
    model = build_model(tiny_config.model, num_classes=5).double().eval()
    image = torch.randn(3, 37, 45, dtype=torch.float64)
    seen = []
    original = torch.softmax

    def spying_softmax(x, dim):
        seen.append(x.dtype)
        return original(x, dim=dim)

    torch.softmax, saved = spying_softmax, torch.softmax
    try:
        single = predict(model, image, None, False)
        multi = predict(model, image, (0.75, 1.0), True)
    finally:
        torch.softmax = saved
    assert single.shape == multi.shape == (37, 45)
    assert seen and set(seen) == {torch.float64}
    maps = responsibilities(model, image)
    assert maps.dtype == torch.float64 and maps.shape[-2:] == (37, 45)
