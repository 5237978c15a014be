"""Fabricated ImageNet checkpoints in the namings the project loads."""

from __future__ import annotations

import torch


def encoding_checkpoint() -> dict[str, torch.Tensor]:
    """A PyTorch-Encoding-style deep-stem ResNet-50 state dict, keys written out by hand."""
    sd: dict[str, torch.Tensor] = {}

    def bn(prefix, c):
        sd.update(
            {
                f"{prefix}.weight": torch.rand(c),
                f"{prefix}.bias": torch.rand(c),
                f"{prefix}.running_mean": torch.rand(c),
                f"{prefix}.running_var": torch.rand(c) + 0.5,
                f"{prefix}.num_batches_tracked": torch.tensor(7),
            }
        )

    sd["conv1.0.weight"] = torch.randn(64, 3, 3, 3)
    bn("conv1.1", 64)
    sd["conv1.3.weight"] = torch.randn(64, 64, 3, 3)
    bn("conv1.4", 64)
    sd["conv1.6.weight"] = torch.randn(128, 64, 3, 3)
    bn("bn1", 128)
    inplanes = 128
    for layer, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for i in range(blocks):
            p = f"layer{layer}.{i}"
            sd[f"{p}.conv1.weight"] = torch.randn(planes, inplanes, 1, 1)
            bn(f"{p}.bn1", planes)
            sd[f"{p}.conv2.weight"] = torch.randn(planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            sd[f"{p}.conv3.weight"] = torch.randn(planes * 4, planes, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if i == 0:
                sd[f"{p}.downsample.0.weight"] = torch.randn(planes * 4, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    return sd
