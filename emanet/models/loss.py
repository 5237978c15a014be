"""The segmentation loss, with the official normalisation and the standard one as an option."""

from __future__ import annotations

import typing

import torch
import torch.nn.functional as F

from emanet.config import LossNormalization

#: The loss's normalisations: the choices of ``train.loss_normalization`` (:data:`emanet.config.LossNormalization`).
NORMALIZATIONS: tuple[str, ...] = typing.get_args(LossNormalization)


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int, normalization: LossNormalization
) -> torch.Tensor:
    """Cross-entropy of (B, K, H, W) logits against (B, H, W) labels whose ``ignore_index`` pixels count for
    nothing; ``normalization`` is params.yaml's ``train.loss_normalization`` (no default here: it is written there).

    ``all_pixels`` (official, docs/reproducing.md#training-recipe): per image, the sum of pixel losses over *all* H x W
    pixels with ignored ones counting as zero, divided by H x W, then averaged over the batch; so an
    image's weight shrinks with its fraction of valid pixels. ``valid_pixels`` is PyTorch's usual
    mean over the non-ignored pixels of the batch.

    Computed in at least float32 (bf16/fp16 logits are raised to float32, float64 logits stay
    float64), so the mean over every pixel of the batch never accumulates in half precision.
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if normalization == "valid_pixels":
        return F.cross_entropy(logits, target, ignore_index=ignore_index)
    if normalization != "all_pixels":
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    per_pixel = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    return per_pixel.flatten(1).mean(dim=1).mean()
