"""Iteration-based data order: which images each rank trains on at each iteration.

The global batch of iteration ``t`` is the next ``batch_size`` indices of an endless stream made of
one seeded permutation per epoch; rank ``r`` of ``W`` takes the r-th contiguous slice. The stream is a
pure function of (seed, t), so resuming at iteration ``t`` needs no saved sampler state, and W
processes see exactly the images one process sees with the whole batch. Indices are *virtual*
(``epoch * n + i``) so the dataset can seed each sample's augmentation by epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


class IterationBatchSampler(Sampler[list[int]]):
    """Yields this rank's slice of each global batch for iterations ``start .. total - 1``."""

    def __init__(self, n: int, batch_size: int, world_size: int, rank: int, seed: int, start: int, total: int):
        if batch_size % world_size:
            raise ValueError(f"train.batch_size {batch_size} is not divisible by the {world_size} processes")
        self.n, self.batch_size, self.world_size, self.rank = n, batch_size, world_size, rank
        self.seed, self.start, self.total = seed, start, total
        self.per_rank = batch_size // world_size
        self._cache: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            self._cache = {epoch: epoch_permutation(self.n, self.seed, epoch)}
        return self._cache[epoch]

    def __iter__(self) -> Iterator[list[int]]:
        for iteration in range(self.start, self.total):
            first = iteration * self.batch_size + self.rank * self.per_rank
            batch = []
            for position in range(first, first + self.per_rank):
                epoch, offset = divmod(position, self.n)
                batch.append(int(epoch * self.n + self._perm(epoch)[offset]))
            yield batch

    def __len__(self) -> int:
        return self.total - self.start
