"""What a dataset converter hands to :mod:`emanet.data.convert.prepare`."""

from __future__ import annotations

from dataclasses import dataclass, field

from emanet.data.convert.sources import Sample


@dataclass
class Conversion:
    """Class names (in label order), split -> ids, id -> sample, and how the data was derived.

    ``min_labelled_pixels`` (split -> n) drops the images of that split with at most n pixels of a
    class other than background and ignore, after conversion (COCO pre-training keeps only images
    that show VOC objects). Counts are asserted on the ids before that filter.
    """

    dataset: str
    classes: list[str]
    splits: dict[str, list[str]]
    samples: dict[str, Sample]
    source: dict
    min_labelled_pixels: dict[str, int] = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        return all(sample.label is not None for sample in self.samples.values())
