"""PASCAL VOC 2012 + SBD -> trainaug (10,582) / val (1,449), with VOC labels taking precedence.

trainaug = (VOC train ∪ SBD train ∪ SBD val) − VOC val (docs/datasets.md#sbd-and-trainaug). Ids with a VOC
``SegmentationClass`` PNG keep it (255 boundary band included); SBD-only ids take ``GTcls.Segmentation``.
An existing ``SegmentationClassAug/`` beside ``SegmentationClass/`` (grayscale or palette variant)
replaces SBD: trainaug is then the ids it labels minus VOC val.
"""

from __future__ import annotations

from pathlib import Path

from emanet.data.archives import catalog
from emanet.data.classes import VOC_CLASSES
from emanet.data.convert import labels
from emanet.data.convert.conversion import Conversion, Sample
from emanet.data.convert.sources import find_dir, locate, stems
from emanet.data.files import DataError, listing, read_id_list

_TRAIN_LIST, _TEST_LIST = "ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/test.txt"
_SBD_MEMBERS = [f"benchmark_RELEASE/dataset/{m}" for m in ("cls", "img", "train.txt", "val.txt")]


def convert(raw_dir: Path) -> Conversion:
    voc = locate(raw_dir, "VOCdevkit/VOC2012", catalog.VOC2012.name, marker=_TRAIN_LIST)
    seg = voc / "ImageSets" / "Segmentation"
    train, val = read_id_list(seg / "train.txt"), read_id_list(seg / "val.txt")
    trainval = read_id_list(seg / "trainval.txt") if (seg / "trainval.txt").exists() else sorted(train + val)
    voc_labels = stems(voc / "SegmentationClass", ".png")
    aug_dir = voc / "SegmentationClassAug"
    samples: dict[str, Sample] = {}
    if aug_dir.is_dir():
        aug = stems(aug_dir, ".png")
        trainaug = sorted(aug - set(val))
        route = "VOC 2012 + existing SegmentationClassAug"
        for i in trainaug:
            samples[i] = Sample(i, voc / "JPEGImages" / f"{i}.jpg", aug_dir / f"{i}.png", labels.voc_png)
    else:
        sbd = locate(raw_dir, "benchmark_RELEASE/dataset", catalog.SBD.name, _SBD_MEMBERS)
        sbd_ids = read_id_list(sbd / "train.txt") + read_id_list(sbd / "val.txt")
        trainaug = sorted((set(train) | set(sbd_ids)) - set(val))
        route = "VOC 2012 + SBD (VOC labels take precedence)"
        for i in trainaug:
            if i in voc_labels:
                continue
            image = voc / "JPEGImages" / f"{i}.jpg"
            if not image.exists():
                image = sbd / "img" / f"{i}.jpg"
            samples[i] = Sample(i, image, sbd / "cls" / f"{i}.mat", labels.sbd_mat)
    for i in set(train) | set(val) | set(trainval) | (set(trainaug) & voc_labels):
        if i not in samples:
            samples[i] = Sample(
                i, voc / "JPEGImages" / f"{i}.jpg", voc / "SegmentationClass" / f"{i}.png", labels.voc_png
            )
    missing = sorted(i for i, s in samples.items() if not s.image.exists() or not s.label.exists())
    if missing:
        raise DataError(f"{voc}: {len(missing)} listed ids lack an image or a label: {listing(missing)}")
    return Conversion(
        "voc",
        list(VOC_CLASSES),
        {"train": train, "val": val, "trainval": trainval, "trainaug": trainaug},
        samples,
        {"route": route, "class_order": "VOC"},
    )


def _test_tree(raw_dir: Path) -> Path:
    """VOCdevkit/VOC2012 holding ImageSets/Segmentation/test.txt: an extracted tree (the test tar is often
    unpacked over the trainval one), else VOC2012test.tar unpacked."""
    name = catalog.VOC2012_TEST.name
    found = find_dir(raw_dir, "VOCdevkit/VOC2012", marker=_TEST_LIST)
    if found is None and not (raw_dir / name).is_file():
        raise DataError(
            f"{raw_dir}: neither {name} nor an extracted VOCdevkit/VOC2012 with {_TEST_LIST} "
            f"({catalog.VOC2012_TEST.access})"
        )
    return found or locate(raw_dir, "VOCdevkit/VOC2012", name, marker=_TEST_LIST)


def convert_test(raw_dir: Path) -> Conversion:
    """The 1,456 VOC 2012 segmentation test images, without labels: the evaluation server scores them."""
    voc = _test_tree(raw_dir)
    test = read_id_list(voc / "ImageSets" / "Segmentation" / "test.txt")
    samples = {i: Sample(i, voc / "JPEGImages" / f"{i}.jpg", None, None) for i in test}
    missing = sorted(i for i, s in samples.items() if not s.image.exists())
    if missing:
        raise DataError(f"{voc / 'JPEGImages'}: {len(missing)} test images are missing: {listing(missing)}")
    return Conversion(
        "voc_test",
        list(VOC_CLASSES),
        {"test": test},
        samples,
        {"route": "VOC2012test.tar ImageSets/Segmentation/test.txt (no public labels)", "class_order": "VOC"},
    )
