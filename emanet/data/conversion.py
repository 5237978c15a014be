"""What a dataset converter hands to :mod:`emanet.data.prepare`."""

from __future__ import annotations

from dataclasses import dataclass

from emanet.data.sources import Sample


@dataclass
class Conversion:
    """Class names (in label order), split -> ids, id -> sample, and how the data was derived."""

    dataset: str
    classes: list[str]
    splits: dict[str, list[str]]
    samples: dict[str, Sample]
    source: dict
