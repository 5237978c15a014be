"""The iteration-based data order: shared by ranks, resumable from any iteration, one permutation per epoch."""

from __future__ import annotations

import pytest

from emanet.engine.sampler import IterationBatchSampler


def test_ranks_split_exactly_the_single_process_batches():
    single = list(IterationBatchSampler(10, 4, 1, 0, seed=3, start=0, total=12))
    ranks = [list(IterationBatchSampler(10, 4, 2, r, seed=3, start=0, total=12)) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == single


def test_resuming_at_an_iteration_continues_the_same_stream():
    full = list(IterationBatchSampler(10, 4, 1, 0, seed=3, start=0, total=12))
    assert list(IterationBatchSampler(10, 4, 1, 0, seed=3, start=7, total=12)) == full[7:]


def test_every_epoch_is_a_permutation_with_virtual_indices():
    stream = [i for batch in IterationBatchSampler(10, 5, 1, 0, seed=3, start=0, total=6) for i in batch]
    epochs = [stream[e * 10 : (e + 1) * 10] for e in range(3)]
    for epoch, indices in enumerate(epochs):
        assert sorted(i - epoch * 10 for i in indices) == list(range(10))
    assert epochs[0] != [i - 10 for i in epochs[1]], "a new order each epoch"


def test_batch_must_divide_over_the_processes():
    with pytest.raises(ValueError, match="not divisible by the 4 processes"):
        IterationBatchSampler(10, 6, 4, 0, seed=0, start=0, total=1)
