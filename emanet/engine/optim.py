"""The official optimiser set-up: three parameter groups and the poly schedule stepped every N iterations."""

from __future__ import annotations

from torch import nn

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Split trainable parameters as the official code does (docs/reproducing.md#training-recipe).

    1. conv (and linear) weights: lr, weight decay;  2. normalisation weights: lr, no decay;
    3. every bias: 2 x lr, no decay.  Anything else trainable (the EMA bases in ``gradient``
    maintenance) goes with group 2: learned at lr, never decayed. Frozen parameters are left out.
    Each group carries ``lr_mult`` so the schedule can rescale it.
    """
    decay, no_decay, biases = [], [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if name == "bias":
                biases.append(param)
            elif name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear)):
                decay.append(param)
            else:
                no_decay.append(param)
    groups = [
        {"params": decay, "lr": lr, "lr_mult": 1.0, "weight_decay": weight_decay, "name": "weights"},
        {"params": no_decay, "lr": lr, "lr_mult": 1.0, "weight_decay": 0.0, "name": "norm_weights"},
        {"params": biases, "lr": 2 * lr, "lr_mult": 2.0, "weight_decay": 0.0, "name": "biases"},
    ]
    return [g for g in groups if g["params"]]


def poly_lr(base_lr: float, iteration: int, max_iterations: int, power: float = 0.9, step_every: int = 10) -> float:
    """lr = base * (1 - it / max)^power, recomputed only every ``step_every`` iterations (official: 10)."""
    held = (iteration // step_every) * step_every
    return base_lr * (1.0 - held / max_iterations) ** power


def set_lr(optimizer, lr: float) -> None:
    """Apply ``lr`` to every group, scaled by the group's ``lr_mult``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
