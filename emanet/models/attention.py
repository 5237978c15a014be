"""The attention blocks EMANet is compared with: Non-local (embedded Gaussian) and A² (double attention).

Both are residual blocks over a (B, C, H, W) map with the same interface as the EMA unit, so the heads
can swap one for another inside the same frame (docs/reproducing.md#non-local-and-a2-comparison).
"""

from __future__ import annotations

import torch
from torch import nn


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al., CVPR 2018).

    theta, phi, g are 1x1 convs C -> C_i; the affinity softmax(theta^T phi) is N x N per image; the
    aggregated values go back through a 1x1 conv C_i -> C with BN, and are added to the input.
    """

    def __init__(self, channels: int, inner_channels: int | None = None):
        super().__init__()
        inner = inner_channels or channels // 2
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.out = nn.Sequential(nn.Conv2d(inner, channels, 1, bias=False), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.out[1].weight)  # starts as identity, as the original recommends

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        theta = self.theta(x).flatten(2)  # B, Ci, N
        phi = self.phi(x).flatten(2)  # B, Ci, N
        g = self.g(x).flatten(2)  # B, Ci, N
        attn = torch.softmax(torch.bmm(theta.transpose(1, 2), phi), dim=-1)  # B, N, N
        y = torch.bmm(g, attn.transpose(1, 2)).view(b, -1, h, w)  # B, Ci, H, W
        return x + self.out(y)


class DoubleAttentionBlock(nn.Module):
    """A² block (Chen et al., NeurIPS 2018): gather global descriptors, then distribute them.

    A = conv_a(X) (c_m maps), B = softmax over positions of conv_b(X) (c_n attention maps): the
    gathered descriptors G = A B^T are c_m x c_n; V = softmax over c_n of conv_v(X) distributes
    them back to every position, Z = G V; a 1x1 conv c_m -> C with BN is added to the input.
    """

    def __init__(self, channels: int, c_m: int | None = None, c_n: int | None = None):
        super().__init__()
        c_m = c_m or channels // 2
        c_n = c_n or channels // 2
        self.conv_a = nn.Conv2d(channels, c_m, 1)
        self.conv_b = nn.Conv2d(channels, c_n, 1)
        self.conv_v = nn.Conv2d(channels, c_n, 1)
        self.out = nn.Sequential(nn.Conv2d(c_m, channels, 1, bias=False), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.out[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        a = self.conv_a(x).flatten(2)  # B, c_m, N
        attn_gather = torch.softmax(self.conv_b(x).flatten(2), dim=2)  # B, c_n, N
        attn_dist = torch.softmax(self.conv_v(x).flatten(2), dim=1)  # B, c_n, N
        descriptors = torch.bmm(a, attn_gather.transpose(1, 2))  # B, c_m, c_n
        z = torch.bmm(descriptors, attn_dist).view(b, -1, h, w)  # B, c_m, H, W
        return x + self.out(z)
