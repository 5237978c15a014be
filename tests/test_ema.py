"""The EMA unit against the paper's equations, written out directly per image in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from emanet.models.ema import EMAUnit
from tests.helpers.models import bn_momentum, ema_config

EPS = 1e-6


def _norm_rows(mu: torch.Tensor, norm: str) -> torch.Tensor:
    """Normalise each basis (a row of K x C) over channels."""
    if norm == "l2":
        return mu / (EPS + torch.sqrt((mu**2).sum(dim=1, keepdim=True)))
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
        z = z / z.sum(dim=1, keepdim=True)  # E-step, softmax over K
        z_bar = z / (EPS + z.sum(dim=0, keepdim=True))  # L1 over pixels, per basis
        mu = _norm_rows(z_bar.T @ x, norm)  # M-step, then normalisation
    return z, mu


def reference_forward(unit: EMAUnit, x_in: torch.Tensor, train: bool):
    """The whole unit in float64 from the equations of docs/reproducing.md#the-ema-head; returns (output,
    per-image mu)."""
    p = {k: v.double() for k, v in unit.state_dict().items()}
    x_in = x_in.double()
    b, c, h, w = x_in.shape
    outs, mus = [], []
    for i in range(b):
        s = x_in[i].reshape(c, h * w).T  # N x C, the identity
        x = s @ p["conv_in.weight"].reshape(c, c).T + p["conv_in.bias"]  # conv_in, with bias
        z, mu = reference_em(x, p["bases"][0].T, unit.active_stages if not train else unit.stages, unit.norm)
        recon = torch.clamp(z @ mu, min=0)  # last Z, last mu; ReLU
        outs.append(recon @ p["conv_out.0.weight"].reshape(c, c).T)  # conv_out, no bias
        mus.append(mu.T)
    y = torch.stack(outs)  # B x N x C
    if train:
        mean, var = y.mean(dim=(0, 1)), y.var(dim=(0, 1), unbiased=False)
    else:
        mean, var = p["conv_out.1.running_mean"], p["conv_out.1.running_var"]
    y = (y - mean) / torch.sqrt(var + 1e-5) * p["conv_out.1.weight"] + p["conv_out.1.bias"]
    out = torch.clamp(y + x_in.reshape(b, c, h * w).transpose(1, 2), min=0)
    return out.transpose(1, 2).reshape(b, c, h, w), torch.stack(mus)


def _unit(**kwargs) -> EMAUnit:
    unit = EMAUnit(16, ema_config(num_bases=8, **kwargs), bn_momentum())
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
    assert not torch.allclose(unit.bases.norm(dim=1), torch.ones(1, 8), atol=1e-4), (
        "the official update does not renormalise: a mean of unit vectors is shorter than 1"
    )


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
    unit = EMAUnit(32, ema_config(num_bases=64), bn_momentum())
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
    clone = EMAUnit(16, ema_config(num_bases=8), bn_momentum())
    clone.load_state_dict(unit.state_dict())
    clone.eval()
    x = _input()
    assert torch.equal(clone.bases, unit.bases)
    torch.testing.assert_close(clone(x), unit(x), atol=0, rtol=0)


@pytest.mark.parametrize("kwargs", [{"maintenance": "backprop"}, {"norm": "batch"}, {"stages": 0}])
def test_bad_switches_are_refused(kwargs):
    with pytest.raises(ValueError):
        EMAUnit(8, ema_config(**kwargs), bn_momentum())


def test_responsibilities_sum_to_one_per_pixel():
    unit = _unit().eval()
    feats = F.relu(torch.randn(2, 16, 20))
    z, mu = unit.em(feats)
    torch.testing.assert_close(z.sum(dim=2), torch.ones(2, 20))
    assert mu.shape == (2, 16, 8)


# --- precision: at least float32 for the EM, never lower than the input -------------------------------------


def _float32_path(unit: EMAUnit, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The unit's float32 computation written out step by step (conv_in, EM, reconstruction, conv_out,
    residual; the moving average) — what a float32 input must give, bit for bit."""
    b, c, h, w = x.shape
    feats = unit.conv_in(x).view(b, c, h * w)
    mu = unit.bases.expand(b, -1, -1)
    with torch.no_grad():
        for _ in range(unit.active_stages):
            z = torch.softmax(torch.bmm(feats.transpose(1, 2), mu), dim=2)
            z_bar = z / (EPS + z.sum(dim=1, keepdim=True))
            mu = torch.bmm(feats, z_bar)
            mu = mu / (EPS + mu.norm(dim=1, keepdim=True))
    recon = torch.bmm(mu, z.transpose(1, 2)).view(b, c, h, w)
    out = torch.relu(unit.conv_out(torch.relu(recon)) + x)
    bases = unit.bases.clone()
    if unit.training:
        mean = mu.sum(dim=0, keepdim=True) / torch.tensor([float(b)])
        bases.mul_(unit.momentum).add_(mean, alpha=1 - unit.momentum)
    return out, bases


@pytest.mark.parametrize("train", [False, True])
def test_float32_input_gives_the_float32_computation_bit_for_bit(train):
    torch.manual_seed(0)
    unit = _unit().train(train)
    twin = _unit().train(train)
    twin.load_state_dict(unit.state_dict())
    x = _input()
    with torch.no_grad():
        expected, expected_bases = _float32_path(twin, x)
        out = unit(x)
    assert out.dtype == torch.float32 and unit.bases.dtype == torch.float32
    assert torch.equal(out, expected)
    assert torch.equal(unit.bases, expected_bases)


@pytest.mark.parametrize("norm", ["l2", "layer", "none"])
@pytest.mark.parametrize("train", [False, True])
def test_float64_unit_computes_in_float64(norm, train):
    """A float64 unit keeps float64 throughout: it matches the float64 equations to ~1e-12, far
    beyond what a float32 pass (errors ~1e-7) could reach."""
    unit = _unit(norm=norm).double().train(train)
    x = _input().double()
    bases_before = unit.bases.clone()
    expected, mus = reference_forward(unit, x, train=train)
    z, mu = unit.em(unit.conv_in(x).flatten(2))
    assert z.dtype == mu.dtype == torch.float64
    out = unit(x)
    assert out.dtype == torch.float64 and unit.bases.dtype == torch.float64
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    if train:
        torch.testing.assert_close(
            unit.bases, 0.9 * bases_before + 0.1 * mus.mean(dim=0, keepdim=True), atol=1e-12, rtol=0
        )


def test_gradcheck_through_the_em_iterations_in_float64():
    """``gradient`` maintenance backpropagates through every EM step: the analytical gradients with
    respect to the input, the bases and conv_in agree with finite differences."""
    torch.manual_seed(0)
    unit = EMAUnit(4, ema_config(num_bases=3, stages=2, maintenance="gradient"), bn_momentum()).double().eval()
    x = torch.rand(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    bases = unit.bases.detach().clone().requires_grad_(True)
    weight = unit.conv_in.weight.detach().clone().requires_grad_(True)

    def run(x, bases, weight):
        return torch.func.functional_call(unit, {"bases": bases, "conv_in.weight": weight}, (x,))

    assert torch.autograd.gradcheck(run, (x, bases, weight), eps=1e-6, atol=1e-5)


def test_gradcheck_of_the_trained_parameters_in_official_mode():
    """Official mode: the EM runs without autograd, so conv_out and its BN (what is trained) get exact
    gradients; checked in float64 against finite differences."""
    torch.manual_seed(0)
    unit = _unit().double().eval()
    x = _input().double()[:2, :, :3, :4]
    names = ["conv_out.0.weight", "conv_out.1.weight", "conv_out.1.bias"]
    params = tuple(dict(unit.named_parameters())[n].detach().clone().requires_grad_(True) for n in names)

    def run(*values):
        return torch.func.functional_call(unit, dict(zip(names, values)), (x,))

    assert torch.autograd.gradcheck(run, params, eps=1e-6, atol=1e-5)


def _spy_em(unit: EMAUnit) -> list[tuple[torch.dtype, ...]]:
    """Record the dtypes of every EM call (features in, Z and mu out) while it runs as usual."""
    seen, em = [], unit.em

    def recording(x, stages=None):
        z, mu = em(x, stages)
        seen.append((x.dtype, z.dtype, mu.dtype))
        return z, mu

    unit.em = recording
    return seen


@pytest.mark.parametrize("train", [False, True])
def test_cpu_autocast_bfloat16_runs_the_em_in_float32(train):
    unit = _unit().train(train)
    x = _input().bfloat16()  # what fc0 gives under autocast
    # The EM itself ignores autocast: bf16-valued features give exactly the float32 EM's Z and mu.
    feats = unit.conv_in(x.float()).flatten(2)
    z32, mu32 = unit.em(feats)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, mu = unit.em(feats)
        z_bf, mu_bf = unit.em(feats.bfloat16())
    assert torch.equal(z, z32) and torch.equal(mu, mu32)
    assert z_bf.dtype == mu_bf.dtype == torch.float32
    seen = _spy_em(unit)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = unit(x)
    assert seen == [(torch.float32, torch.float32, torch.float32)]
    assert out.dtype == torch.bfloat16, "conv_out and the residual follow autocast"
    assert unit.bases.dtype == torch.float32


def test_a_bfloat16_unit_still_runs_the_em_in_float32():
    """A model cast to bf16 as a whole (no autocast): the EM is raised to float32, the output and the
    bases stay bf16."""
    unit = _unit().bfloat16().train()
    seen = _spy_em(unit)
    before = unit.bases.clone()
    out = unit(_input().bfloat16())
    assert seen == [(torch.float32, torch.float32, torch.float32)]
    assert out.dtype == unit.bases.dtype == torch.bfloat16
    assert not torch.equal(unit.bases, before)
