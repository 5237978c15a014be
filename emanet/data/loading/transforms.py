"""Training augmentation as the official code does it, and the evaluation helpers.

Training (docs/reproducing.md#training-recipe): ImageNet normalisation, a scale drawn from a discrete set (default
{0.5, 0.75, ..., 2.0}; image bilinear with ``align_corners=True``, label nearest), padding bottom/right to
the crop with 0 (the mean colour after normalisation) and 255 (label), a random crop and a random
horizontal flip. torchvision's v2 functional ops do the padding, cropping and flipping on
``tv_tensors.Mask`` labels; all randomness comes from the ``torch.Generator`` passed in, so a sample
depends only on (seed, epoch, index) and never on which worker loads it.

Evaluation (docs/reproducing.md#evaluation-protocol):
pad bottom/right so that H and W are 1 mod 8; multi-scale + flip views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TRAIN_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
IGNORE = 255


def normalize(image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) -> float, ImageNet mean/std."""
    return TF.normalize(image.float().div_(255.0), list(MEAN), list(STD))


def rescale(image: torch.Tensor, label: torch.Tensor | None, scale: float):
    """Resize by ``scale``: image bilinear (align_corners=True, as the official), label nearest."""
    h, w = image.shape[-2:]
    size = (int(h * scale + 0.5), int(w * scale + 0.5))
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=True)[0]
    if label is not None:
        label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].to(torch.uint8)
    return image, label


@dataclass(frozen=True)
class TrainTransform:
    """Normalise -> discrete random scale -> pad to the crop -> random crop -> random flip."""

    crop_size: int
    scales: Sequence[float] = TRAIN_SCALES
    flip: bool = True

    def __call__(self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator):
        scale = self.scales[int(torch.randint(len(self.scales), (1,), generator=generator))]
        image, label = rescale(normalize(image), label, scale)
        image, mask = tv_tensors.Image(image), tv_tensors.Mask(label)
        h, w = image.shape[-2:]
        pad_h, pad_w = max(self.crop_size - h, 0), max(self.crop_size - w, 0)
        if pad_h or pad_w:
            image = TF.pad(image, [0, 0, pad_w, pad_h], fill=0.0)
            mask = TF.pad(mask, [0, 0, pad_w, pad_h], fill=IGNORE)
        h, w = image.shape[-2:]
        top = int(torch.randint(h - self.crop_size + 1, (1,), generator=generator))
        left = int(torch.randint(w - self.crop_size + 1, (1,), generator=generator))
        image = TF.crop(image, top, left, self.crop_size, self.crop_size)
        mask = TF.crop(mask, top, left, self.crop_size, self.crop_size)
        if self.flip and float(torch.rand(1, generator=generator)) < 0.5:
            image, mask = TF.horizontal_flip(image), TF.horizontal_flip(mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()


@dataclass(frozen=True)
class EvalTransform:
    """Whole image, normalised; the label as class ids (long)."""

    def __call__(self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator | None = None):
        return normalize(image), label.long()


def pad_to_8k1(image: torch.Tensor, label: torch.Tensor | None = None, fill: float = 0.0):
    """Pad bottom/right so H and W are 1 mod 8 (500 -> 505), as the official evaluation does."""
    h, w = image.shape[-2:]
    pad_h, pad_w = (1 - h) % 8, (1 - w) % 8
    image = F.pad(image, (0, pad_w, 0, pad_h), value=fill)
    if label is not None:
        label = F.pad(label, (0, pad_w, 0, pad_h), value=IGNORE)
    return image, label


def multiscale_views(image: torch.Tensor, scales: Sequence[float], flip: bool):
    """Yield (scale, flipped, view padded to 8k+1, unpadded (h, w)) for MS(+flip) inference."""
    for scale in scales:
        scaled = rescale(image, None, scale)[0] if scale != 1.0 else image
        for flipped in (False, True) if flip else (False,):
            view = scaled.flip(-1) if flipped else scaled
            yield scale, flipped, pad_to_8k1(view)[0], tuple(view.shape[-2:])
