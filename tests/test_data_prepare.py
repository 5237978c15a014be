"""Every converter end to end on `emanet synth` archives, and the traps of docs/datasets.md#known-traps."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from emanet.data.archives.download import fetch_named
from emanet.data.classes import CONTEXT59, VOC_CLASSES, cocostuff_class_names, palette_png
from emanet.data.convert import prepare as prepare_module
from emanet.data.convert.official import OFFICIAL_COUNTS, splits
from emanet.data.convert.prepare import CONVERTERS, prepare
from emanet.data.files import DataError, read_id_list
from emanet.data.layout import read_meta
from tests.helpers.http_server import FolderServer

N = 6  # images per split in the session's synthetic archives


def _labels(root: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.array(Image.open(p)) for p in sorted((root / "labels").glob("*.png"))}


def _counts(synth_dir: Path, dataset: str) -> dict[str, int]:
    return json.loads((synth_dir / "manifest.json").read_text())["counts"][dataset]


@pytest.mark.parametrize("dataset", ["voc", "context", "cocostuff10k", "cocostuff164k"])
def test_download_over_http_then_prepare(tmp_path, synth_dir, dataset):
    raw = tmp_path / "raw"
    with FolderServer(synth_dir) as server:
        fetch_named(dataset, raw, [server.url], synth_dir / "manifest.json", progress=False)
    root = prepare(dataset, raw, tmp_path / "prepared", _counts(synth_dir, dataset), workers=1, progress=False)
    meta = read_meta(root)
    assert meta["counts"] == _counts(synth_dir, dataset) and meta["counts_checked"]
    assert set(meta["counts"]) == set(splits(dataset))  # the splits the configuration checks accept
    for split, count in meta["counts"].items():
        ids = read_id_list(root / "splits" / f"{split}.txt")
        assert len(ids) == count
        for i in ids:
            assert (root / "images" / f"{i}.jpg").is_file() and (root / "labels" / f"{i}.png").is_file()
    for name, label in _labels(root).items():
        assert label.dtype == np.uint8 and label.ndim == 2
        assert set(np.unique(label)) <= set(range(meta["num_classes"])) | {255}, name
        with Image.open(root / "images" / f"{name}.jpg") as im:
            assert im.size == label.shape[::-1]
    assert len(meta["label_checksum"]) == 64 and (root / "labels.md5").read_text().count("\n") == len(_labels(root))


def test_every_dataset_has_a_converter_and_the_synthetic_archives_hold_its_official_splits(synth_dir):
    assert set(CONVERTERS) == set(OFFICIAL_COUNTS)
    counts = json.loads((synth_dir / "manifest.json").read_text())["counts"]
    assert {name: set(c) for name, c in counts.items()} == {name: set(splits(name)) for name in OFFICIAL_COUNTS}
    assert splits("voc") == ("train", "val", "trainval", "trainaug") and splits("voc_test") == ("test",)


def test_prepare_refuses_a_converter_whose_splits_differ_from_the_declared_ones(tmp_path, raw_dir, monkeypatch):
    original = prepare_module.CONVERTERS["context"]

    def renamed(raw):
        conv = original(raw)
        conv.splits["value"] = conv.splits.pop("val")
        return conv

    monkeypatch.setitem(prepare_module.CONVERTERS, "context", renamed)
    with pytest.raises(DataError, match=r"context: the converter returned the splits \['train', 'value'\]"):
        prepare("context", raw_dir, tmp_path / "out", None, progress=False)
    assert not (tmp_path / "out" / "context").exists()


def test_voc_trainaug_set_algebra_and_label_precedence(tmp_path, raw_dir, synth_dir):
    root = prepare("voc", raw_dir, tmp_path / "out", _counts(synth_dir, "voc"), progress=False)
    seg = raw_dir / "extracted" / "VOCtrainval_11-May-2012.tar" / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    sbd = raw_dir / "extracted" / "benchmark.tgz" / "benchmark_RELEASE/dataset"
    train, val = set(read_id_list(seg / "train.txt")), set(read_id_list(seg / "val.txt"))
    sbd_ids = set(read_id_list(sbd / "train.txt")) | set(read_id_list(sbd / "val.txt"))
    assert sbd_ids & val, "the synthetic SBD lists contain VOC val ids, as the real ones do"
    trainaug = read_id_list(root / "splits" / "trainaug.txt")
    assert set(trainaug) == (train | sbd_ids) - val and len(trainaug) == 2 * N
    labels = _labels(root)
    for i in trainaug:
        if i in train:  # VOC label, with its 255 boundary band
            assert 255 in labels[i]
        else:  # SBD-only: GTcls.Segmentation, no band
            expected = scipy.io.loadmat(sbd / "cls" / f"{i}.mat")["GTcls"][0, 0]["Segmentation"]
            assert np.array_equal(labels[i], expected) and 255 not in labels[i]
    assert read_meta(root)["classes"] == list(VOC_CLASSES)


@pytest.mark.parametrize("variant", ["L", "P"])
def test_voc_from_an_existing_segmentation_class_aug(tmp_path, raw_dir, synth_dir, variant):
    """An extracted VOCdevkit plus SegmentationClassAug/ (either variant) replaces SBD."""
    reference = prepare("voc", raw_dir, tmp_path / "ref", None, progress=False)
    devkit = raw_dir / "extracted" / "VOCtrainval_11-May-2012.tar" / "VOCdevkit"
    user = tmp_path / "user"
    shutil.copytree(devkit, user / "VOCdevkit")
    aug = user / "VOCdevkit/VOC2012/SegmentationClassAug"
    aug.mkdir()
    for name, label in _labels(reference).items():
        if variant == "L":
            Image.fromarray(label, mode="L").save(aug / f"{name}.png")
        else:
            (aug / f"{name}.png").write_bytes(palette_png(label))
    root = prepare("voc", user, tmp_path / "out", _counts(synth_dir, "voc"), progress=False)
    assert read_meta(root)["source"]["route"] == "VOC 2012 + existing SegmentationClassAug"
    assert (root / "splits/trainaug.txt").read_text() == (reference / "splits/trainaug.txt").read_text()
    assert read_meta(root)["label_checksum"] == read_meta(reference)["label_checksum"]


def test_context_maps_459_ids_to_59_and_everything_else_to_255(tmp_path, raw_dir):
    root = prepare("context", raw_dir, tmp_path / "out", None, progress=False)
    mats = raw_dir / "extracted" / "trainval.tar.gz" / "trainval"
    raw_to_train = {raw: i for i, (_, _, raw) in enumerate(CONTEXT59)}
    for name, label in _labels(root).items():
        raw = scipy.io.loadmat(mats / f"{name}.mat")["LabelMap"]
        expected = np.vectorize(lambda v: raw_to_train.get(int(v), 255))(raw)
        assert np.array_equal(label, expected)
        assert 255 in label, "unlabeled pixels and the other 400 classes are ignored"
    meta = read_meta(root)
    assert meta["classes"][:3] == ["aeroplane", "bicycle", "bird"] and meta["classes"][10] == "diningtable"
    assert meta["num_classes"] == 59 and "Context-59" in meta["source"]["convention"]


def test_context_refuses_a_labels_txt_that_does_not_match_the_mapping(tmp_path, raw_dir):
    ctx = raw_dir / "extracted" / "trainval.tar.gz"
    with tarfile.open(raw_dir / "trainval.tar.gz") as tar:
        tar.extractall(ctx, filter="data")
    text = (ctx / "labels.txt").read_text().replace("397: table", "397: desk")
    (ctx / "labels.txt").write_text(text)
    with pytest.raises(DataError, match=r"labels.txt: does not match the Context-59 mapping: 397: 'desk'"):
        prepare("context", raw_dir, tmp_path / "out", None, progress=False)


def test_context_split_must_coincide_with_voc2010_main(tmp_path, raw_dir):
    ctx = raw_dir / "extracted" / "trainval.tar.gz"
    with tarfile.open(raw_dir / "trainval.tar.gz") as tar:
        tar.extractall(ctx, filter="data")
    victim = sorted((ctx / "trainval").glob("*.mat"))[0]
    victim.unlink()
    with pytest.raises(DataError, match=f"missing .mat for {victim.stem}"):
        prepare("context", raw_dir, tmp_path / "out", None, progress=False)


def test_cocostuff10k_drops_unlabeled_and_unused_ids(tmp_path, raw_dir):
    root = prepare("cocostuff10k", raw_dir, tmp_path / "out", None, progress=False)
    zipped = raw_dir / "extracted" / "cocostuff-10k-v1.1.zip" / "annotations"
    used = [k for k in range(1, 183) if k not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)]
    for name, label in _labels(root).items():
        s = scipy.io.loadmat(zipped / f"{name}.mat")["S"]
        assert np.array_equal(label == 255, s == 0)
        for raw_id in np.unique(s[s > 0]):
            assert np.all(label[s == raw_id] == used.index(int(raw_id)))
    meta = read_meta(root)
    assert meta["classes"] == cocostuff_class_names() and meta["num_classes"] == 171
    assert set(meta["counts"]) == {"train", "test"}


def test_cocostuff164k_is_zero_based_and_keeps_255(tmp_path, raw_dir):
    root = prepare("cocostuff164k", raw_dir, tmp_path / "out", None, progress=False)
    maps = raw_dir / "extracted" / "stuffthingmaps_trainval2017.zip"
    for name, label in _labels(root).items():
        folder = "train2017" if (maps / "train2017" / f"{name}.png").exists() else "val2017"
        raw = np.array(Image.open(maps / folder / f"{name}.png"))
        assert np.array_equal(label == 255, raw == 255)
        assert np.all(label[raw == 0] == 0), "0 is person, not unlabeled"
        assert np.all(label[raw == 12] == 11), "raw 12 (stop sign) follows the dropped street sign (11)"


def test_official_counts_are_asserted_with_a_clear_error(tmp_path, raw_dir):
    with pytest.raises(DataError, match=r"voc: split counts differ.*train has 6 ids, expected 1,464 \(1,458 missing\)"):
        prepare("voc", raw_dir, tmp_path / "out", OFFICIAL_COUNTS["voc"], progress=False)
    assert not (tmp_path / "out" / "voc").exists()


def test_label_size_mismatch_is_an_error_naming_the_file(tmp_path, raw_dir):
    devkit = tmp_path / "user" / "VOCdevkit"
    with tarfile.open(raw_dir / "VOCtrainval_11-May-2012.tar") as tar:
        tar.extractall(tmp_path / "user", filter="data")
    victim = sorted((devkit / "VOC2012/SegmentationClass").glob("*.png"))[0]
    victim.write_bytes(palette_png(np.zeros((5, 5), dtype=np.uint8)))
    shutil.copy(raw_dir / "benchmark.tgz", tmp_path / "user")
    with pytest.raises(DataError, match=f"{victim.name}: label is 5x5 but its image .* is "):
        prepare("voc", tmp_path / "user", tmp_path / "out", None, progress=False)
    assert not (tmp_path / "out" / "voc").exists() and not list((tmp_path / "out").glob(".voc.*.tmp"))


def test_label_value_outside_the_classes_is_an_error_naming_the_file(tmp_path, raw_dir):
    with tarfile.open(raw_dir / "VOCtrainval_11-May-2012.tar") as tar:
        tar.extractall(tmp_path / "user", filter="data")
    victim = sorted((tmp_path / "user/VOCdevkit/VOC2012/SegmentationClass").glob("*.png"))[0]
    label = np.array(Image.open(victim))
    label[0, 0] = 38  # what convert('L') would have produced
    victim.write_bytes(palette_png(label))
    shutil.copy(raw_dir / "benchmark.tgz", tmp_path / "user")
    with pytest.raises(DataError, match=rf"{victim.name}: label values outside the classes: \[38\]"):
        prepare("voc", tmp_path / "user", tmp_path / "out", None, progress=False)


def test_truncated_archive_is_a_clear_error(tmp_path, raw_dir):
    archive = raw_dir / "VOCtrainval_11-May-2012.tar"
    archive.write_bytes(archive.read_bytes()[:50_000])
    with pytest.raises(Exception, match="VOCtrainval_11-May-2012.tar: truncated or corrupt archive"):
        prepare("voc", raw_dir, tmp_path / "out", None, progress=False)
    assert not (raw_dir / "extracted" / "VOCtrainval_11-May-2012.tar").exists()


def test_an_interrupted_prepare_is_redone_not_trusted(tmp_path, raw_dir, monkeypatch):
    real = prepare_module.convert_sample
    calls = {"n": 0}

    def dying(*args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated kill")
        return real(*args)

    monkeypatch.setattr(prepare_module, "convert_sample", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare("voc", raw_dir, tmp_path / "out", None, progress=False)
    assert not (tmp_path / "out" / "voc").exists()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(prepare_module, "convert_sample", real)
    root = prepare("voc", raw_dir, tmp_path / "out", None, progress=False)
    assert read_meta(root)["counts"]["trainaug"] == 2 * N


def _prepare_in_process(raw, out):
    prepare("context", raw, out, None, progress=False)


def test_two_prepares_at_once_do_not_corrupt_the_output(tmp_path, raw_dir):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_prepare_in_process, args=(raw_dir, tmp_path / "out")) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    single = prepare("context", raw_dir, tmp_path / "single", None, progress=False)
    assert read_meta(tmp_path / "out" / "context")["label_checksum"] == read_meta(single)["label_checksum"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".context.lock", "context"]


def test_synth_is_reproducible(tmp_path, synth_dir):
    from emanet.data.synthetic.archives import synthesize

    synthesize(tmp_path / "again", images_per_split=6, seed=0)
    assert (tmp_path / "again" / "manifest.json").read_text() == (synth_dir / "manifest.json").read_text()


def test_cli_synth_download_prepare(tmp_path):
    emanet = str(Path(sys.executable).parent / "emanet")
    run = lambda *a: subprocess.run([emanet, *a], capture_output=True, text=True)  # noqa: E731
    assert run("synth", "--out", str(tmp_path / "syn"), "--images-per-split", "4", "--dataset", "voc").returncode == 0
    manifest = str(tmp_path / "syn" / "manifest.json")
    done = run(
        "download",
        "voc",
        "--raw-dir",
        str(tmp_path / "raw"),
        "--mirror",
        (tmp_path / "syn").as_uri(),
        "--manifest",
        manifest,
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    bad = run("prepare", "voc", "--raw-dir", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--quiet")
    assert bad.returncode == 2 and "expected 1,464" in bad.stderr and "Traceback" not in bad.stderr
    ok = run(
        "prepare",
        "voc",
        "--raw-dir",
        str(tmp_path / "raw"),
        "--out",
        str(tmp_path / "out"),
        "--manifest",
        manifest,
        "--quiet",
        "--workers",
        "2",
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "out/voc/meta.json").read_text())["counts"]["trainaug"] == 8
