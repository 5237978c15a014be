"""VOC 2010 + PASCAL Context -> Context-59 (train 4,998 / val 5,105), without the Detail API.

The conversion of docs/datasets.md#pascal-context:
each ``trainval/<id>.mat`` ``LabelMap`` (ids 1..459 of ``labels.txt``) is
mapped with the official 59-class table; background and the other 400 classes become 255 (the
Context-59 convention, classes 0..58 in the official 59-class order). The table is checked against
``labels.txt`` before anything is converted, and the split must coincide with VOC 2010's
``ImageSets/Main/{train,val}.txt``.
"""

from __future__ import annotations

from pathlib import Path

from emanet.data.archives import catalog
from emanet.data.classes import CONTEXT59, CONTEXT_NUM_RAW
from emanet.data.convert import labels
from emanet.data.convert.conversion import Conversion, Sample
from emanet.data.convert.sources import locate, stems
from emanet.data.files import DataError, listing, read_class_file, read_id_list

_VOC_MEMBERS = [f"VOCdevkit/VOC2010/{m}" for m in ("JPEGImages", "ImageSets/Main/train.txt", "ImageSets/Main/val.txt")]


def _annotations(raw_dir: Path) -> Path:
    """The folder holding ``labels.txt`` and ``trainval/`` (extracting trainval.tar.gz if needed)."""
    for candidate in [raw_dir, *sorted(raw_dir.glob("**/trainval"))]:
        base = candidate if candidate == raw_dir else candidate.parent
        if (base / "labels.txt").is_file() and (base / "trainval").is_dir():
            return base
    trainval = locate(raw_dir, "trainval", catalog.CONTEXT_TRAINVAL.name)
    return trainval.parent


def check_mapping(labels_txt: Path) -> None:
    """The 59-class table must name the same classes as this ``labels.txt`` (459 entries)."""
    names = read_class_file(labels_txt)
    if sorted(names) != list(range(1, CONTEXT_NUM_RAW + 1)):
        odd = sorted(set(names) ^ set(range(1, CONTEXT_NUM_RAW + 1)))
        raise DataError(
            f"{labels_txt}: expected the {CONTEXT_NUM_RAW} classes 1..{CONTEXT_NUM_RAW} of PASCAL "
            f"Context's labels.txt, found {len(names)} (ids missing or extra: {odd[:10]}); use the "
            f"labels.txt of trainval.tar.gz"
        )
    wrong = [
        f"{raw}: {names.get(raw)!r} (expected {expected!r})"
        for _, expected, raw in CONTEXT59
        if names.get(raw) != expected
    ]
    if wrong:
        raise DataError(f"{labels_txt}: does not match the Context-59 mapping: {'; '.join(wrong[:5])}")


def convert(raw_dir: Path) -> Conversion:
    voc = locate(raw_dir, "VOCdevkit/VOC2010", catalog.VOC2010.name, _VOC_MEMBERS)
    annotations = _annotations(raw_dir)
    check_mapping(annotations / "labels.txt")
    main = voc / "ImageSets" / "Main"
    train, val = read_id_list(main / "train.txt"), read_id_list(main / "val.txt")
    mats = stems(annotations / "trainval", ".mat")
    listed = set(train) | set(val)
    if mats != listed:
        raise DataError(
            f"{annotations / 'trainval'}: the Context annotations do not coincide with VOC 2010 "
            f"Main train+val: missing .mat for {listing(listed - mats) or 'none'}; "
            f"not in the lists: {listing(mats - listed) or 'none'}; check that {main} holds the "
            f"lists of VOCtrainval_03-May-2010.tar and trainval/ the .mat files of trainval.tar.gz "
            f"(re-extract or re-download whichever was edited)"
        )
    samples = {
        i: Sample(i, voc / "JPEGImages" / f"{i}.jpg", annotations / "trainval" / f"{i}.mat", labels.context_mat)
        for i in listed
    }
    missing = sorted(i for i, s in samples.items() if not s.image.exists())
    if missing:
        raise DataError(f"{voc / 'JPEGImages'}: {len(missing)} images missing: {listing(missing)}")
    return Conversion(
        "context",
        [name for name, _, _ in CONTEXT59],
        {"train": train, "val": val},
        samples,
        {
            "route": "A: trainval/*.mat LabelMap + official 59-class mapping (no Detail API)",
            "class_order": "official 59-class order",
            "convention": "Context-59: background -> 255",
        },
    )
