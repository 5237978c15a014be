"""Synchronised BatchNorm on every device: torch's SyncBatchNorm on CUDA, a gloo version on CPU.

The paper's batch statistics are over the global batch of 16 (docs/reproducing.md#backbone). torch's
``nn.SyncBatchNorm`` refuses CPU tensors (docs/faq.md#syncbn-on-one-gpu-or-on-cpu), so CPU runs under torchrun would
otherwise normalise each rank's images alone and differ from one process on the same global batch.
:class:`GlobalBatchNorm2d` computes the statistics from sums all-reduced with
``torch.distributed.nn.functional.all_reduce``, which is differentiable, so autograd gives the exact
global-batch gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover every rank's batch (any backend, CPU included)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return super().forward(x)
        channels = x.shape[1]
        local = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), x.new_full((1,), x.numel() / channels)])
        total = dist_fn.all_reduce(local)
        count = total[-1]
        mean = total[:channels] / count
        var = (total[channels : 2 * channels] / count - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                unbiased = var.detach() * count / (count - 1)
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        inv = torch.rsqrt(var + self.eps)
        y = (x - mean[None, :, None, None]) * inv[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d by the synchronised kind for ``device`` (state dict keys unchanged)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        new = GlobalBatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, _convert_cpu(child))
    return module
