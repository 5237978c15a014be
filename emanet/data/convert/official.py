"""The datasets ``emanet prepare`` writes, the splits each prepared folder holds and their official sizes.

Standard library only, so the configuration checks (:func:`emanet.config.check_all`) read the datasets and
their splits without importing the converters (numpy, scipy, PIL). The converters (``voc.py``, ``context.py``,
``cocostuff.py``) return exactly these splits and :mod:`emanet.data.convert.prepare` asserts these counts
(tests/test_data_prepare.py checks both on synthetic archives).
"""

from __future__ import annotations

#: dataset -> {split: number of ids} of the official release (docs/datasets.md). voc: VOC 2012's train, val
#: and trainval plus trainaug (VOC train + SBD, minus VOC val); voc_test: the unlabelled test images; coco_voc:
#: COCO 2017 relabelled to VOC's classes, counted before its labelled-pixel filter (the 164k release's sizes).
OFFICIAL_COUNTS: dict[str, dict[str, int]] = {
    "voc": {"train": 1464, "val": 1449, "trainval": 2913, "trainaug": 10582},
    "voc_test": {"test": 1456},
    "context": {"train": 4998, "val": 5105},
    "cocostuff10k": {"train": 9000, "test": 1000},
    "cocostuff164k": {"train": 118287, "val": 5000},
    "coco_voc": {"train": 118287, "val": 5000},
}
#: The datasets ``emanet prepare`` knows, in :data:`OFFICIAL_COUNTS` order.
DATASETS: tuple[str, ...] = tuple(OFFICIAL_COUNTS)


def splits(dataset: str) -> tuple[str, ...]:
    """The split names of ``dataset``'s prepared folder (``splits/<split>.txt``), in :data:`OFFICIAL_COUNTS`
    order. Raises KeyError for a dataset not in :data:`DATASETS`."""
    return tuple(OFFICIAL_COUNTS[dataset])
