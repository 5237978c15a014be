"""Evaluation images decoded and normalised in DataLoader workers, in split order, each image once.

Rank ``r`` of ``W`` takes images ``r, r + W, r + 2W, ...`` of the split (no padding of the split, so no
image is counted twice and the per-rank confusion matrices sum to the single-process one). The loader
keeps that order with any number of workers (``data.workers``; 0 decodes in the main process), and
yields one image at a time: evaluation works on whole images of different sizes, never padded together.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from emanet.data.loading.dataset import SegmentationDataset
from emanet.data.loading.transforms import normalize


class EvalImages(Dataset):
    """(index in the split, normalised float image (3, H, W), uint8 label (H, W) or None for a split
    without labels) for the split positions ``indices`` of ``dataset``.

    Decoding errors are :class:`emanet.data.convert.sources.DataError` naming the file (re-raised from a worker).
    """

    def __init__(self, dataset: SegmentationDataset, indices: Sequence[int]):
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[int, torch.Tensor, torch.Tensor | None]:
        index = self.indices[position]
        if self.dataset.labelled:
            image, label = self.dataset.load(index)
        else:
            image, label = self.dataset.load_image(index), None
        return index, normalize(image), label


def rank_indices(length: int, rank: int, world_size: int) -> range:
    """The split positions rank ``rank`` of ``world_size`` evaluates: every W-th image from ``rank``."""
    return range(rank, length, world_size)


def eval_loader(
    dataset: SegmentationDataset, rank: int, world_size: int, workers: int, pin_memory: bool = False
) -> DataLoader:
    """A DataLoader over this rank's images (:class:`EvalImages`, one per step, not collated) decoded by
    ``workers`` processes (``data.workers``, at most one per image). Raises ValueError for a negative ``workers``."""
    if workers < 0:
        raise ValueError(f"data.workers must be >= 0, got {workers}")
    images = EvalImages(dataset, rank_indices(len(dataset), rank, world_size))
    workers = min(workers, len(images))  # no idle processes for a short split
    return DataLoader(images, batch_size=None, shuffle=False, num_workers=workers, pin_memory=pin_memory)
