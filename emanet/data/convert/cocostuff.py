"""COCO-Stuff -> 171 classes: 10k v1.1 (train 9,000 / test 1,000) and 164k (train 118,287 / val 5,000).

The two releases number their labels differently (docs/datasets.md#coco-stuff-10k,
docs/datasets.md#coco-stuff-164k): 10k v1.1 ``S`` maps use the
``labels.txt`` ids (0 = unlabeled -> 255, 1..182), the 164k PNGs use id − 1 with 255 = unlabeled. Both
drop the 11 thing ids that have no annotations and keep 171 train ids; class names come from the
downloaded ``labels.txt``, checked against the known list.
"""

from __future__ import annotations

from pathlib import Path

from emanet.data.archives import catalog
from emanet.data.classes import COCO_VOC_IDS, COCOSTUFF_LABELS, COCOSTUFF_UNUSED, VOC_CLASSES
from emanet.data.convert import labels
from emanet.data.convert.conversion import Conversion, Sample
from emanet.data.convert.sources import extracted, locate, stems
from emanet.data.files import DataError, listing, read_class_file, read_id_list

#: torchvision's COCO-for-VOC rule: training images need more than 1,000 pixels of the 20 VOC classes.
COCO_VOC_MIN_PIXELS = 1000


def class_names(raw_dir: Path, file_name: str) -> list[str]:
    """The 171 used class names from a COCO-Stuff ``labels.txt`` (183 lines, 0 = unlabeled)."""
    path = raw_dir / file_name
    names = read_class_file(path)
    if sorted(names) != list(range(183)) or names[0] != "unlabeled":
        raise DataError(
            f"{path}: expected COCO-Stuff's 183 classes 0..182 with 0 = unlabeled, found {len(names)}"
            f"{' (0 is ' + repr(names[0]) + ')' if 0 in names and names[0] != 'unlabeled' else ''}; "
            f"delete it and run `emanet download` again to fetch the release's labels.txt"
        )
    if [names[k] for k in range(1, 183)] != list(COCOSTUFF_LABELS):
        first = next(k for k in range(1, 183) if names[k] != COCOSTUFF_LABELS[k - 1])
        raise DataError(
            f"{path}: class names differ from COCO-Stuff's labels.txt (first at {first}: "
            f"{names[first]!r}, expected {COCOSTUFF_LABELS[first - 1]!r}); delete it and run "
            f"`emanet download` again to fetch the release's labels.txt"
        )
    return [names[k] for k in range(1, 183) if k not in COCOSTUFF_UNUSED]


def convert_10k(raw_dir: Path) -> Conversion:
    root = locate(raw_dir, "imageLists", catalog.COCOSTUFF10K.name).parent
    splits = {
        "train": read_id_list(root / "imageLists" / "train.txt"),
        "test": read_id_list(root / "imageLists" / "test.txt"),
    }
    samples = {
        i: Sample(i, root / "images" / f"{i}.jpg", root / "annotations" / f"{i}.mat", labels.cocostuff10k_mat)
        for ids in splits.values()
        for i in ids
    }
    missing = sorted(i for i, s in samples.items() if not s.image.exists() or not s.label.exists())
    if missing:
        raise DataError(f"{root}: {len(missing)} listed ids lack an image or an annotation: {listing(missing)}")
    return Conversion(
        "cocostuff10k",
        class_names(raw_dir, catalog.COCOSTUFF10K_LABELS.name),
        splits,
        samples,
        {
            "route": "cocostuff-10k-v1.1 annotations/*.mat S (0 -> 255, 11 unused ids dropped)",
            "class_order": "labels.txt order of the 171 used ids",
        },
    )


def _first_dir(candidates: list[Path], child: str) -> Path | None:
    return next((c for c in candidates if (c / child).is_dir()), None)


def convert_164k(raw_dir: Path) -> Conversion:
    """Label maps from ``stuffthingmaps_trainval2017/`` or mmseg's ``annotations/`` or the zip; images
    from ``images/<split>2017``, ``<split>2017`` or the COCO zips."""
    maps = _first_dir([raw_dir / "stuffthingmaps_trainval2017", raw_dir / "annotations"], "train2017") or extracted(
        raw_dir, catalog.STUFFTHINGMAPS.name
    )
    splits, samples = {}, {}
    for split, archive in (("train", catalog.COCO_TRAIN2017), ("val", catalog.COCO_VAL2017)):
        folder = f"{split}2017"
        root = _first_dir([raw_dir / "images", raw_dir], folder) or extracted(raw_dir, archive.name)
        images = root / folder
        labelled = stems(maps / folder, ".png")
        if not labelled:
            raise DataError(f"{maps / folder}: no label maps found")
        missing = labelled - stems(images, ".jpg")
        if missing:
            raise DataError(f"{images}: {len(missing)} labelled images are missing: {listing(missing)}")
        splits[split] = sorted(labelled)
        samples.update(
            {i: Sample(i, images / f"{i}.jpg", maps / folder / f"{i}.png", labels.cocostuff164k_png) for i in labelled}
        )
    return Conversion(
        "cocostuff164k",
        class_names(raw_dir, catalog.COCOSTUFF_LABELS.name),
        splits,
        samples,
        {
            "route": "stuffthingmaps_trainval2017 PNGs (id - 1, 255 kept, 11 unused ids dropped)",
            "class_order": "labels.txt order of the 171 used ids",
        },
    )


def convert_coco_voc(raw_dir: Path) -> Conversion:
    """COCO 2017 relabelled to VOC's 21 classes, for Table 2's COCO pre-training
    (docs/datasets.md#coco-2017-for-pre-training).

    The 164k stuffthingmaps give every pixel a COCO id: the 20 VOC categories take their VOC id, all
    other things and stuff become background, unlabeled stays 255 (``classes.coco_voc_lut``). As in
    torchvision's reference, training images with at most 1,000 VOC pixels are dropped; val keeps all.
    """
    full = convert_164k(raw_dir)
    samples = {i: Sample(s.image_id, s.image, s.label, labels.coco_voc_png) for i, s in full.samples.items()}
    return Conversion(
        "coco_voc",
        list(VOC_CLASSES),
        full.splits,
        samples,
        {
            "route": "stuffthingmaps_trainval2017 PNGs: the 20 VOC categories -> VOC ids, other "
            "things and stuff -> 0, 255 kept; train images with <= 1,000 VOC pixels dropped",
            "class_order": "VOC",
            "coco_ids_of_voc_classes_1_to_20": list(COCO_VOC_IDS),
        },
        min_labelled_pixels={"train": COCO_VOC_MIN_PIXELS},
    )
