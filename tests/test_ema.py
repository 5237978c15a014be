"""The EMA unit against the paper's equations, written out directly per image in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from emanet.models.ema import EMAUnit

EPS = 1e-6


def _norm_rows(mu: torch.Tensor, norm: str) -> torch.Tensor:
    """Normalise each basis (a row of K x C) over channels."""
    if norm == "l2":
        return mu / (EPS + torch.sqrt((mu ** 2).sum(dim=1, keepdim=True)))
    if norm == "layer":
        mean = mu.mean(dim=1, keepdim=True)
        var = ((mu - mean) ** 2).mean(dim=1, keepdim=True)
        return (mu - mean) / torch.sqrt(var + EPS)
    return mu


def reference_em(x: torch.Tensor, mu0: torch.Tensor, stages: int, norm: str = "l2"):
    """One image: x is N x C, mu0 is K x C. Returns the last Z (N x K) and mu (K x C)."""
    mu = mu0
    for _ in range(stages):
        logits = x @ mu.T
        z = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
        z = z / z.sum(dim=1, keepdim=True)                       # E-step, softmax over K
        z_bar = z / (EPS + z.sum(dim=0, keepdim=True))           # L1 over pixels, per basis
        mu = _norm_rows(z_bar.T @ x, norm)                       # M-step, then normalisation
    return z, mu


def reference_forward(unit: EMAUnit, x_in: torch.Tensor, train: bool):
    """The whole unit in float64 from the equations of paper.md §3.3; returns (output, per-image mu)."""
    p = {k: v.double() for k, v in unit.state_dict().items()}
    x_in = x_in.double()
    b, c, h, w = x_in.shape
    outs, mus = [], []
    for i in range(b):
        s = x_in[i].reshape(c, h * w).T                                      # N x C, the identity
        x = s @ p["conv_in.weight"].reshape(c, c).T + p["conv_in.bias"]      # conv_in, with bias
        z, mu = reference_em(x, p["bases"][0].T, unit.active_stages if not train else unit.stages, unit.norm)
        recon = torch.clamp(z @ mu, min=0)                                   # last Z, last mu; ReLU
        outs.append(recon @ p["conv_out.0.weight"].reshape(c, c).T)          # conv_out, no bias
        mus.append(mu.T)
    y = torch.stack(outs)                                                    # B x N x C
    if train:
        mean, var = y.mean(dim=(0, 1)), y.var(dim=(0, 1), unbiased=False)
    else:
        mean, var = p["conv_out.1.running_mean"], p["conv_out.1.running_var"]
    y = (y - mean) / torch.sqrt(var + 1e-5) * p["conv_out.1.weight"] + p["conv_out.1.bias"]
    out = torch.clamp(y + x_in.reshape(b, c, h * w).transpose(1, 2), min=0)
    return out.transpose(1, 2).reshape(b, c, h, w), torch.stack(mus)


def _unit(**kwargs) -> EMAUnit:
    unit = EMAUnit(16, num_bases=8, **kwargs)
    with torch.no_grad():  # non-trivial BN state so eval mode is a real check
        unit.conv_out[1].running_mean.uniform_(-0.5, 0.5)
        unit.conv_out[1].running_var.uniform_(0.5, 2.0)
        unit.conv_out[1].weight.uniform_(0.5, 1.5)
        unit.conv_out[1].bias.uniform_(-0.2, 0.2)
    return unit


def _input() -> torch.Tensor:
    return torch.relu(torch.randn(3, 16, 5, 7))  # fc0's output is non-negative


@pytest.mark.parametrize("norm", ["l2", "layer", "none"])
def test_eval_output_matches_equations(norm):
    unit = _unit(norm=norm).eval()
    x = _input()
    expected, _ = reference_forward(unit, x, train=False)
    torch.testing.assert_close(unit(x), expected.float(), atol=1e-5, rtol=0)


def test_train_output_and_moving_average_match_equations():
    unit = _unit().train()
    x = _input()
    bases_before = unit.bases.clone()
    expected, mus = reference_forward(unit, x, train=True)
    out = unit(x)
    torch.testing.assert_close(out, expected.float(), atol=1e-5, rtol=0)
    # Eq. 15 with alpha = 0.9 over the batch mean of mu_T, without renormalisation.
    expected_bases = 0.9 * bases_before.double() + 0.1 * mus.mean(dim=0, keepdim=True)
    torch.testing.assert_close(unit.bases, expected_bases.float(), atol=1e-6, rtol=0)
    assert not torch.allclose(unit.bases.norm(dim=1), torch.ones(1, 8), atol=1e-4), \
        "the official update does not renormalise: a mean of unit vectors is shorter than 1"


def test_renormalize_gives_mmsegmentation_variant():
    unit = _unit(renormalize=True).train()
    x = _input()
    before = unit.bases.clone()
    _, mus = reference_forward(unit, x, train=True)
    unit(x)
    mean = mus.mean(dim=0, keepdim=True)
    mean = mean / (EPS + mean.norm(dim=1, keepdim=True))
    torch.testing.assert_close(unit.bases, (0.9 * before.double() + 0.1 * mean).float(), atol=1e-6, rtol=0)


def test_eval_mode_never_updates_bases():
    unit = _unit().eval()
    before = unit.bases.clone()
    unit(_input())
    assert torch.equal(unit.bases, before)


def test_initial_bases_are_l2_normalised_buffer():
    unit = EMAUnit(32, num_bases=64)
    assert unit.bases.shape == (1, 32, 64)
    assert "bases" in dict(unit.named_buffers())
    torch.testing.assert_close(unit.bases.norm(dim=1), torch.ones(1, 64), atol=1e-5, rtol=0)


def test_conv_in_gets_no_gradient_in_official_mode():
    unit = _unit().train()
    x = _input().requires_grad_(True)
    unit(x).sum().backward()
    assert unit.conv_in.weight.grad is None and unit.conv_in.bias.grad is None
    assert unit.conv_out[0].weight.grad is not None and unit.conv_out[0].weight.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0, "the input learns through the residual only"


def test_eval_stages_override_without_rebuilding():
    unit = _unit(stages=3).eval()
    x = _input()
    out_t3 = unit(x)
    unit.eval_stages = 1
    assert unit.active_stages == 1
    out_t1 = unit(x)
    assert not torch.allclose(out_t1, out_t3)
    expected, _ = reference_forward(unit, x, train=False)  # reference uses active_stages = 1
    torch.testing.assert_close(out_t1, expected.float(), atol=1e-5, rtol=0)
    unit.train()
    assert unit.active_stages == 3, "T_eval must not change training"


def test_gradient_maintenance_learns_bases_by_backprop():
    unit = _unit(maintenance="gradient").train()
    assert isinstance(unit.bases, torch.nn.Parameter)
    before = unit.bases.detach().clone()
    unit(_input()).sum().backward()
    assert torch.equal(unit.bases.detach(), before), "no moving average in gradient mode"
    assert unit.bases.grad is not None and unit.bases.grad.abs().sum() > 0
    assert unit.conv_in.weight.grad is not None, "EM runs with autograd, so conv_in learns too"


def test_none_maintenance_keeps_random_init():
    unit = _unit(maintenance="none").train()
    before = unit.bases.clone()
    unit(_input()).sum().backward()
    assert torch.equal(unit.bases, before)
    assert unit.conv_in.weight.grad is None


def test_state_dict_round_trip_keeps_bases_and_output():
    unit = _unit().train()
    unit(_input())  # move the bases away from their init
    unit.eval()
    clone = EMAUnit(16, num_bases=8)
    clone.load_state_dict(unit.state_dict())
    clone.eval()
    x = _input()
    assert torch.equal(clone.bases, unit.bases)
    torch.testing.assert_close(clone(x), unit(x), atol=0, rtol=0)


@pytest.mark.parametrize("kwargs", [{"maintenance": "backprop"}, {"norm": "batch"}, {"stages": 0}])
def test_bad_switches_are_refused(kwargs):
    with pytest.raises(ValueError):
        EMAUnit(8, **kwargs)


def test_responsibilities_sum_to_one_per_pixel():
    unit = _unit().eval()
    feats = F.relu(torch.randn(2, 16, 20))
    z, mu = unit.em(feats)
    torch.testing.assert_close(z.sum(dim=2), torch.ones(2, 20))
    assert mu.shape == (2, 16, 8)
