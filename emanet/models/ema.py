"""The Expectation-Maximization Attention unit (EMAU), as the paper and official code define it.

Reimplemented from the description in docs/reproducing.md#the-ema-head (the official code is GPL-3.0
and is not copied). Per image, with features X (N x C) and bases mu (K x C):

    E-step   Z      = softmax_k(X mu^T)                      responsibilities, rows sum to 1
    column   Zbar   = Z / (eps + sum_n Z)                    L1 over pixels, per basis
    M-step   mu     = Zbar^T X                               responsibility-weighted mean
    norm     mu     = mu / (eps + ||mu||_2)                  per basis, over channels
    output   relu(BN(W2 relu(Z mu)) + X_in)                  last Z and last mu

In the official mode the EM loop runs without autograd, so ``conv_in`` never receives a gradient
(docs/reproducing.md#the-ema-head): it is frozen here, which behaves identically and lets DDP run without
``find_unused_parameters``. The initial bases are a buffer that the unit itself updates by a moving
average over the *global* batch in training mode (Eq. 15), all-reduced across DDP ranks.
"""

from __future__ import annotations

import math
import typing
from contextlib import nullcontext

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from emanet.config import EMAConfig, Maintenance, Norm

MAINTENANCE: tuple[str, ...] = typing.get_args(Maintenance)
NORMS: tuple[str, ...] = typing.get_args(Norm)
EPS = 1e-6


def normalize_bases(mu: torch.Tensor, norm: str, eps: float = EPS) -> torch.Tensor:
    """Normalise bases of shape (B, C, K) per basis over the channel axis C."""
    if norm == "l2":
        return mu / (eps + mu.norm(dim=1, keepdim=True))
    if norm == "layer":
        return F.layer_norm(mu.transpose(1, 2), (mu.shape[1],), eps=eps).transpose(1, 2)
    if norm == "none":
        return mu
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def em_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the EM iterations run in for an input of ``dtype``: at least float32, never lower
    than the input (bf16/fp16 -> float32, float32 -> float32, float64 -> float64)."""
    return torch.promote_types(dtype, torch.float32)


def _no_autocast(device_type: str):
    """Disable autocast for this device (the meta device, used to count costs, has none)."""
    return nullcontext() if device_type == "meta" else torch.autocast(device_type, enabled=False)


def _global_batch_mean(mu: torch.Tensor) -> torch.Tensor:
    """Mean over the batch axis of (B, C, K), over every DDP rank when a process group is running.

    Sums and counts are all-reduced separately, so ranks with unequal batch sizes still give the
    exact mean of the global batch.
    """
    total = mu.sum(dim=0, keepdim=True)
    count = torch.tensor([float(mu.shape[0])], device=mu.device, dtype=mu.dtype)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(total)
        dist.all_reduce(count)
    return total / count


class EMAUnit(nn.Module):
    """EM attention over ``channels``-dimensional features, as ``cfg`` (params.yaml's ``model.ema``) sets it.

    Args:
        channels: C, the feature width (512 or 256 in the paper; ``model.head_channels``).
        cfg: ``num_bases`` K; ``stages`` T_train, the EM iterations in training mode; ``eval_stages`` T_eval
            (``None``: the same as ``stages``; the attribute is settable on a trained model); ``momentum``
            alpha of the moving average mu0 <- alpha*mu0 + (1-alpha)*mean(mu_T); ``maintenance``, how the
            initial bases evolve: ``moving_average`` (official), ``none`` (fixed random init) or
            ``gradient`` (a Parameter learned by backprop through the EM loop); ``norm`` of the bases after
            each M-step (and at init): ``l2``, ``layer`` or ``none``; ``renormalize`` the batch-mean bases
            before blending (mmsegmentation's variant; the official code does not).
        bn_momentum: momentum of the output BatchNorm (PyTorch convention; ``model.bn_momentum``).

    Raises ValueError for a maintenance or norm outside their choices, or stages below 1.
    """

    def __init__(self, channels: int, cfg: EMAConfig, bn_momentum: float):
        super().__init__()
        num_bases, stages, eval_stages, momentum = cfg.num_bases, cfg.stages, cfg.eval_stages, cfg.momentum
        maintenance, norm, renormalize = cfg.maintenance, cfg.norm, cfg.renormalize
        if maintenance not in MAINTENANCE:
            raise ValueError(f"maintenance must be one of {MAINTENANCE}, got {maintenance!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if stages < 1 or (eval_stages is not None and eval_stages < 1):
            raise ValueError("stages and eval_stages must be at least 1")
        self.channels, self.num_bases = channels, num_bases
        self.stages, self.eval_stages = stages, eval_stages
        self.momentum, self.maintenance, self.norm, self.renormalize = momentum, maintenance, norm, renormalize

        bases = torch.randn(1, channels, num_bases) * math.sqrt(2.0 / num_bases)
        bases = normalize_bases(bases, norm)
        if maintenance == "gradient":
            self.bases = nn.Parameter(bases)
        else:
            self.register_buffer("bases", bases)

        self.conv_in = nn.Conv2d(channels, channels, 1, bias=True)
        self.conv_out = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels, momentum=bn_momentum)
        )
        self._init_weights()
        if maintenance != "gradient":
            self.conv_in.requires_grad_(False)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def active_stages(self) -> int:
        """T for the current mode: ``stages`` in training, ``eval_stages`` (if set) in evaluation."""
        if self.training or self.eval_stages is None:
            return self.stages
        return self.eval_stages

    def em(self, x: torch.Tensor, stages: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the EM iterations on features (B, C, N); return the last Z (B, N, K) and mu (B, C, K).

        Computed in :func:`em_dtype` of the features, outside autocast (bf16/fp16 features are raised
        to float32; the bases are cast to that dtype). Autograd is on only in ``gradient`` maintenance, as in the
        official code's no-grad loop.
        """
        stages = self.active_stages if stages is None else stages
        x = x.to(em_dtype(x.dtype))
        mu = self.bases.to(x.dtype).expand(x.shape[0], -1, -1)
        with (
            torch.set_grad_enabled(torch.is_grad_enabled() and self.maintenance == "gradient"),
            _no_autocast(x.device.type),
        ):
            for _ in range(stages):
                z = torch.softmax(torch.bmm(x.transpose(1, 2), mu), dim=2)
                z_bar = z / (EPS + z.sum(dim=1, keepdim=True))
                mu = normalize_bases(torch.bmm(x, z_bar), self.norm)
        return z, mu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W), in the dtype the rest of the model computes in.

        ``conv_in``, the EM iterations and the reconstruction run in :func:`em_dtype` of the input
        (float32 for bf16/fp16 inputs under autocast or in a half model, float64 for a float64 model),
        outside autocast; ``conv_out`` gets the reconstruction in its own weights' dtype (autocast,
        when on, lowers it as for any conv).
        """
        identity = x
        b, c, h, w = x.shape
        dtype = em_dtype(x.dtype)
        # The softmax over raw inner products and the 1e-6 epsilons are not meant for half precision;
        # for float32 inputs every cast below is a no-op (same kernels, same bits as a plain conv_in).
        with _no_autocast(x.device.type):
            weight, bias = self.conv_in.weight.to(dtype), self.conv_in.bias.to(dtype)
            feats = F.conv2d(x.to(dtype), weight, bias).view(b, c, h * w)
            z, mu = self.em(feats)
            recon = torch.bmm(mu, z.transpose(1, 2)).view(b, c, h, w)
        out = self.conv_out(F.relu(recon).to(self.conv_out[0].weight.dtype))
        if self.training and self.maintenance == "moving_average":
            self._update_bases(mu)
        return F.relu(out + identity)

    @torch.no_grad()
    def _update_bases(self, mu: torch.Tensor) -> None:
        """Eq. 15 over the global batch; no renormalisation unless ``renormalize`` (mmseg variant)."""
        mean = _global_batch_mean(mu.detach())
        if self.renormalize:
            mean = normalize_bases(mean, self.norm)
        self.bases.mul_(self.momentum).add_(mean.to(self.bases.dtype), alpha=1.0 - self.momentum)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, num_bases={self.num_bases}, stages={self.stages}, "
            f"eval_stages={self.eval_stages}, momentum={self.momentum}, "
            f"maintenance={self.maintenance!r}, norm={self.norm!r}, renormalize={self.renormalize}"
        )
