"""The straightforward evaluation: one image, one view, one protocol at a time, decoded in the main process.

This is how ``emanet evaluate`` worked before its views were shared and its images decoded in DataLoader
workers (:mod:`emanet.engine.inference`, :mod:`emanet.data.loading.eval_loader`). It is kept, unchanged, as the
reference that the fast path is tested against (``tests/test_evaluate_shared.py``: identical confusion
matrices on CPU) and timed against (``benchmarks/eval_throughput.py``). Nothing in the pipeline calls it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from emanet.data.loading.dataset import SegmentationDataset
from emanet.data.loading.transforms import multiscale_views, pad_to_8k1
from emanet.engine.metrics import confusion_matrix
from emanet.models import Segmentor


@torch.no_grad()
def reference_predict(
    model: Segmentor, image: torch.Tensor, scales: Sequence[float] | None, flip: bool
) -> torch.Tensor:
    """Class map (H, W) for one normalised image (3, H, W): one forward pass per view, batch 1."""
    h, w = image.shape[-2:]
    if not scales and not flip:
        padded, _ = pad_to_8k1(image)
        return model(padded[None])[0, :, :h, :w].argmax(0)
    total = None
    for _, flipped, view, (vh, vw) in multiscale_views(image, scales or (1.0,), flip):
        logits = model(view[None])[:, :, :vh, :vw]
        probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)
        if (vh, vw) != (h, w):
            probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=True)
        probs = probs.flip(-1) if flipped else probs
        total = probs if total is None else total + probs
    return total[0].argmax(0)


def reference_matrices(
    model: Segmentor,
    dataset: SegmentationDataset,
    protocols: Sequence[tuple[bool, bool, int | None]],
    scales: Sequence[float],
    rank: int = 0,
    world_size: int = 1,
) -> list[torch.Tensor]:
    """One confusion matrix per protocol (multi_scale, flip, T_eval or None = as the model was built), each
    protocol a full pass over this rank's images (every W-th from ``rank``), each image decoded again.

    ``dataset`` must return normalised images and labels (:class:`emanet.data.loading.transforms.EvalTransform`).
    The model's T_eval is restored afterwards.
    """
    units = list(model.ema_units())
    built = [unit.eval_stages for unit in units]
    matrices = []
    try:
        for multi_scale, flip, stages in protocols:
            for unit, value in zip(units, built, strict=True):
                unit.eval_stages = value if stages is None else stages
            matrix = torch.zeros(dataset.num_classes, dataset.num_classes, dtype=torch.int64)
            for index in range(rank, len(dataset), world_size):
                image, label = dataset[index]
                pred = reference_predict(model, image, list(scales) if multi_scale else None, flip)
                matrix += confusion_matrix(pred, label, dataset.num_classes, dataset.meta["ignore_index"])
            matrices.append(matrix)
    finally:
        for unit, value in zip(units, built, strict=True):
            unit.eval_stages = value
    return matrices
