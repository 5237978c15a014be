"""Bookkeeping after the labelled-pixel filter (COCO -> VOC): whichever images the filter drops (the first,
the last, every other one, none, all), the prepare finishes with the right splits, counts and meta.json, or,
when a split is emptied, fails saying so and leaves nothing behind.

The first COCO train2017 id, 000000000009, shows no VOC object: the filter drops the very first image of
the paper profile's conversion, which once crashed the summary after 123k images were converted.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from emanet.data.classes import COCOSTUFF_LABELS
from emanet.data.convert.prepare import prepare
from emanet.data.files import DataError, read_id_list
from emanet.data.layout import read_meta
from tests.helpers.runs import emanet

PERSON = COCOSTUFF_LABELS.index("person")  # stuffthingmaps store labels.txt id - 1
SKY = COCOSTUFF_LABELS.index("sky-other")  # stuff: background after relabelling to VOC


def _extracted_164k(synth_dir, raw):
    """The synthetic 164k zips unpacked the way mmseg users keep them: images/<split>2017/,
    stuffthingmaps_trainval2017/<split>2017/, labels.txt beside them."""
    for name, target in (
        ("train2017.zip", "images"),
        ("val2017.zip", "images"),
        ("stuffthingmaps_trainval2017.zip", "stuffthingmaps_trainval2017"),
    ):
        with zipfile.ZipFile(synth_dir / name) as zf:
            zf.extractall(raw / target)
    (raw / "labels.txt").write_bytes((synth_dir / "labels.txt").read_bytes())
    return sorted(p.stem for p in (raw / "stuffthingmaps_trainval2017" / "train2017").glob("*.png"))


def _set_map(raw, image_id: str, voc_object: bool) -> None:
    """Rewrite one train label map: all person (kept by the filter) or all sky (dropped)."""
    path = raw / "stuffthingmaps_trainval2017" / "train2017" / f"{image_id}.png"
    with Image.open(path) as im:
        h, w = im.height, im.width
    value = PERSON if voc_object else SKY
    assert h * w > 1000  # a whole-image person has more than the filter's 1,000 pixels
    buffer = io.BytesIO()
    Image.fromarray(np.full((h, w), value, np.uint8), mode="L").save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize("dropped", ["first", "last", "first_and_last", "every_other", "none", "all_but_one"])
def test_coco_voc_records_whichever_images_the_filter_drops(tmp_path, synth_dir, dropped):
    raw = tmp_path / "raw"
    ids = _extracted_164k(synth_dir, raw)
    assert len(ids) >= 4
    drop = {
        "first": {ids[0]},
        "last": {ids[-1]},
        "first_and_last": {ids[0], ids[-1]},
        "every_other": set(ids[::2]),
        "none": set(),
        "all_but_one": set(ids[1:]),
    }[dropped]
    for image_id in ids:
        _set_map(raw, image_id, voc_object=image_id not in drop)

    root = prepare("coco_voc", raw, tmp_path / "prepared", None, progress=False)

    meta = read_meta(root)
    kept = [i for i in ids if i not in drop]
    assert read_id_list(root / "splits" / "train.txt") == kept
    assert meta["counts"]["train"] == len(kept)
    assert meta["filtered"]["train"] == {
        "min_labelled_pixels": 1000,
        "source_count": len(ids),
        "removed": len(drop),
        "removed_ids": sorted(drop),
    }
    assert meta["unlabelled_splits"] == []  # a filtered split is still a labelled one
    for image_id in ids:
        present = image_id not in drop
        assert (root / "images" / f"{image_id}.jpg").exists() == present
        assert (root / "labels" / f"{image_id}.png").exists() == present
    md5_listed = [line.split("labels/")[1][:-4] for line in (root / "labels.md5").read_text().splitlines()]
    assert sorted(md5_listed) == sorted(kept + read_id_list(root / "splits" / "val.txt"))
    assert len(read_id_list(root / "splits" / "val.txt")) == meta["counts"]["val"] > 0  # val is never filtered


def test_coco_voc_split_emptied_by_the_filter_is_an_error_and_writes_nothing(tmp_path, synth_dir):
    raw = tmp_path / "raw"
    for image_id in _extracted_164k(synth_dir, raw):
        _set_map(raw, image_id, voc_object=False)
    out = tmp_path / "prepared"
    with pytest.raises(DataError, match=r"removed every image of train .*at most 1,000 pixels"):
        prepare("coco_voc", raw, out, None, progress=False)
    assert not (out / "coco_voc").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # no half-written folder left


def test_cli_prepare_coco_voc_with_the_first_image_dropped(tmp_path, synth_dir):
    """The issue's reproduction, through the CLI: the first train id holds only stuff."""
    raw = tmp_path / "raw"
    ids = _extracted_164k(synth_dir, raw)
    _set_map(raw, ids[0], voc_object=False)
    proc = emanet(["prepare", "coco_voc", "--raw-dir", str(raw), "--out", str(tmp_path / "out"), "--no-count-check"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = read_meta(tmp_path / "out" / "coco_voc")
    assert ids[0] in meta["filtered"]["train"]["removed_ids"]

    for image_id in ids:
        _set_map(raw, image_id, voc_object=False)
    proc = emanet(["prepare", "coco_voc", "--raw-dir", str(raw), "--out", str(tmp_path / "out2"), "--no-count-check"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "removed every image of train" in proc.stderr
