"""What a dataset converter hands to :mod:`emanet.data.convert.prepare`: the samples and the splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from emanet.data.convert.labels import LABEL_READERS, LabelReader


@dataclass(frozen=True)
class Sample:
    """One image of a converted dataset: where its JPEG is, where its label is and how to read it.

    ``reader`` is the label file's reader itself, one of :data:`emanet.data.convert.labels.LABEL_READERS`
    (e.g. ``labels.voc_png``), never a name. ``label`` and ``reader`` are both None for a split without
    public labels (VOC test). Raises TypeError at construction for a label without a known reader, a
    reader without a label, or a reader that is not one of LABEL_READERS (a converter bug, not bad data)."""

    image_id: str
    image: Path
    label: Path | None
    reader: LabelReader | None

    def __post_init__(self):
        if (self.label is None) != (self.reader is None):
            raise TypeError(
                f"Sample {self.image_id!r}: label {self.label} and reader {self.reader!r} must both be set or "
                f"both be None (None only for a split without public labels)"
            )
        if self.reader is not None and self.reader not in LABEL_READERS:
            raise TypeError(
                f"Sample {self.image_id!r}: reader {self.reader!r} is not a label reader of "
                f"emanet.data.convert.labels; pass one of {[r.__name__ for r in LABEL_READERS]}"
            )


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
