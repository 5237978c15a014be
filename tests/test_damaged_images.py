"""Truncated, empty and garbage image and label files, at every stage that reads one (issue 10, part 3).

prepare decodes every image and label fully once and refuses a damaged one by name (nothing written that
a rerun would trust); the later readers (the Dataset, in and out of DataLoader workers, the report's
figures, submission packaging and scoring) re-raise decode errors as DataError naming the file.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from emanet.cli import _message
from emanet.data.archives import catalog
from emanet.data.classes import palette_png
from emanet.data.convert.labels import mat_field
from emanet.data.convert.prepare import prepare
from emanet.data.convert.sources import drop_stale_extractions, extracted
from emanet.data.files import DataError, decode_image, image_size, read_id_list, read_index_png
from emanet.data.layout import read_meta
from emanet.data.loading.dataset import SegmentationDataset
from emanet.engine import submission
from tests.helpers.runs import emanet, run_args


def _truncated(data: bytes) -> bytes:
    """Cut in the middle: for a JPEG the header (up to the start-of-scan marker) stays whole."""
    sos = data.find(b"\xff\xda")
    assert sos == -1 or sos < len(data) // 2, "the cut must fall in the compressed data"
    return data[: len(data) // 2]


def _garbage(data: bytes) -> bytes:
    return np.random.default_rng(len(data)).integers(0, 256, max(len(data), 64), dtype=np.uint8).tobytes()


#: how files get damaged: a download or copy cut short, a file created but never written, random bytes
DAMAGE: dict[str, Callable[[bytes], bytes]] = {"truncated": _truncated, "empty": lambda data: b"", "garbage": _garbage}


def _damage(path: Path, kind: str) -> Path:
    path.write_bytes(DAMAGE[kind](path.read_bytes()))
    return path


def _jpeg(h: int = 60, w: int = 80) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _label(h: int = 60, w: int = 80) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 21, (h, w), dtype=np.uint8)


# --- the decoder --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(DAMAGE))
@pytest.mark.parametrize("what", ["jpeg_image", "png_label"])
def test_a_damaged_file_is_refused_by_name_with_the_fix(tmp_path, what, kind):
    if what == "jpeg_image":
        path, read = tmp_path / "2007_000032.jpg", image_size
        path.write_bytes(_jpeg())
        assert read(path) == (60, 80)
    else:
        path, read = tmp_path / "2007_000032.png", read_index_png
        path.write_bytes(palette_png(_label()))
        assert np.array_equal(read(path), _label())
    _damage(path, kind)
    with pytest.raises(DataError) as caught:
        read(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "re-download or re-extract" in message, message
    assert {"truncated": "truncated", "empty": "is empty (0 bytes)", "garbage": "not an image file"}[kind] in message


def test_a_png_with_a_corrupt_compressed_stream_is_refused(tmp_path):
    data = bytearray(palette_png(_label()))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "flipped.png"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="flipped.png: PNG image data cannot be decoded"):
        read_index_png(path)


def test_a_truncated_jpeg_header_and_a_missing_file_are_named(tmp_path):
    path = tmp_path / "header.jpg"
    path.write_bytes(_jpeg()[:300])  # cut inside the header segments
    with pytest.raises(DataError, match="header.jpg: .*(truncated|cannot be decoded|not an image)"):
        image_size(path)
    with pytest.raises(DataError, match="absent.jpg: image file not found"):
        image_size(tmp_path / "absent.jpg")


@pytest.mark.parametrize("kind", [*sorted(DAMAGE), "header_only"])
def test_damaged_mat_files_are_named(tmp_path, kind):
    import scipy.io

    path = tmp_path / "2008_000002.mat"
    scipy.io.savemat(path, {"S": _label()}, do_compression=True)
    if kind == "header_only":
        path.write_bytes(path.read_bytes()[:128])
    else:
        _damage(path, kind)
    with pytest.raises(DataError, match=f"{path}: .*re-download or re-extract"):
        mat_field(path, "S")


# --- prepare: every converter refuses the damaged file by name, and writes nothing ---------------------------


def _first(folder: Path, pattern: str, ids: list[str] | None = None) -> Path:
    found = sorted(folder.rglob(pattern))
    if ids is not None:
        found = [p for p in found if p.stem in ids]
    assert found, f"no {pattern} under {folder}"
    return found[0]


def _voc_val_ids(raw: Path) -> list[str]:
    return read_id_list(_first(extracted(raw, catalog.VOC2012.name), "ImageSets/Segmentation/val.txt"))


def _sbd_only_id(raw: Path) -> list[str]:
    """An id whose label comes from SBD's .mat (in trainaug, with no VOC SegmentationClass PNG)."""
    voc = extracted(raw, catalog.VOC2012.name)
    voc_labelled = {p.stem for p in voc.rglob("SegmentationClass/*.png")}
    sbd = extracted(raw, catalog.SBD.name)
    return sorted(set(read_id_list(_first(sbd, "dataset/train.txt"))) - voc_labelled - set(_voc_val_ids(raw)))


#: dataset -> function(raw_dir) -> the file of one of its samples, in the extracted archive
VICTIMS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "voc_jpeg": (
        "voc",
        lambda raw: _first(extracted(raw, catalog.VOC2012.name), "JPEGImages/*.jpg", _voc_val_ids(raw)),
    ),
    "voc_png_label": (
        "voc",
        lambda raw: _first(extracted(raw, catalog.VOC2012.name), "SegmentationClass/*.png", _voc_val_ids(raw)),
    ),
    "sbd_mat_label": ("voc", lambda raw: _first(extracted(raw, catalog.SBD.name), "cls/*.mat", _sbd_only_id(raw))),
    "voc_test_jpeg": ("voc_test", lambda raw: _first(extracted(raw, catalog.VOC2012_TEST.name), "JPEGImages/*.jpg")),
    "context_mat_label": (
        "context",
        lambda raw: _first(extracted(raw, catalog.CONTEXT_TRAINVAL.name), "trainval/*.mat"),
    ),
    "cocostuff10k_mat_label": (
        "cocostuff10k",
        lambda raw: _first(extracted(raw, catalog.COCOSTUFF10K.name), "annotations/*.mat"),
    ),
    "cocostuff164k_png_label": (
        "cocostuff164k",
        lambda raw: _first(extracted(raw, catalog.STUFFTHINGMAPS.name), "train2017/*.png"),
    ),
    "coco_jpeg": ("coco_voc", lambda raw: _first(extracted(raw, catalog.COCO_VAL2017.name), "val2017/*.jpg")),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
@pytest.mark.parametrize("victim", sorted(VICTIMS))
def test_prepare_refuses_a_damaged_file_by_name_and_writes_nothing(tmp_path, raw_dir, victim, kind):
    dataset, find = VICTIMS[victim]
    path = _damage(find(raw_dir), kind)
    with pytest.raises(DataError) as caught:
        prepare(dataset, raw_dir, tmp_path / "out", None, progress=False)
    assert str(caught.value).startswith(f"{path}: ") and "re-download or re-extract" in str(caught.value)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f".{dataset}.lock"]


def test_cli_prepare_with_a_truncated_jpeg_exits_2_and_a_rerun_redoes_it(tmp_path, raw_dir):
    """The issue's example: cut in its compressed data, the header intact."""
    jpeg = VICTIMS["voc_jpeg"][1](raw_dir)
    good = jpeg.read_bytes()
    _damage(jpeg, "truncated")
    command = [
        str(Path(sys.executable).parent / "emanet"),
        "prepare",
        "voc",
        "--raw-dir",
        str(raw_dir),
        "--out",
        str(tmp_path / "out"),
        "--no-count-check",
        "--quiet",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert f"{jpeg}: JPEG image data cannot be decoded, the file is truncated or corrupt" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "voc").exists() and not list((tmp_path / "out").glob(".voc.*.tmp"))
    jpeg.write_bytes(good)
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert read_meta(tmp_path / "out" / "voc")["counts"]["val"] == len(_voc_val_ids(raw_dir))


# --- later stages: a prepared file damaged afterwards (or by an older prepare that only read headers) ------


@pytest.fixture
def damaged_root(tmp_path, prepared_root) -> Path:
    """A private copy of the session's prepared VOC (never damage the shared one)."""
    return Path(shutil.copytree(prepared_root / "voc", tmp_path / "prepared" / "voc"))


def _prepared_file(root: Path, split: str, folder: str, index: int = 0) -> Path:
    image_id = read_id_list(root / "splits" / f"{split}.txt")[index]
    return root / folder / f"{image_id}.{'jpg' if folder == 'images' else 'png'}"


@pytest.mark.parametrize("kind", sorted(DAMAGE))
@pytest.mark.parametrize("folder", ["images", "labels"])
def test_dataset_loading_names_the_damaged_file(damaged_root, folder, kind):
    path = _damage(_prepared_file(damaged_root, "val", folder), kind)
    dataset = SegmentationDataset(damaged_root, "val")
    with pytest.raises(DataError) as caught:
        dataset[0]
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "run `emanet prepare voc` again" in message, message
    if folder == "images":
        with pytest.raises(DataError, match=f"{path}: "):
            dataset.load_image(0)


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_file_in_a_dataloader_worker_reaches_the_user_by_name(damaged_root, kind):
    path = _damage(_prepared_file(damaged_root, "val", "images"), kind)
    loader = DataLoader(SegmentationDataset(damaged_root, "val"), num_workers=1)
    with pytest.raises(DataError) as caught:
        next(iter(loader))
    assert "DataLoader worker" in str(caught.value)  # torch wraps it: the CLI shows only the original message
    shown = _message(caught.value)
    assert shown.startswith(f"{path}: ") and "Traceback" not in shown and "\n" not in shown, shown


def test_the_report_figures_samples_name_the_damaged_file(damaged_root, tmp_path):
    """``emanet evaluate`` writes the images the report draws (samples.npz): a damaged one is named."""
    import torch

    from emanet.config import load_params, resolve
    from emanet.engine.samples import SAMPLES, write_samples
    from emanet.models import build_model
    from tests.helpers.runs import ROOT

    path = _damage(_prepared_file(damaged_root, "val", "images"), "truncated")
    dataset = SegmentationDataset(damaged_root, "val")
    model = build_model(resolve(load_params(ROOT / "params.yaml"), "tiny", experiment="fcn").model, dataset.num_classes)
    with pytest.raises(DataError, match=f"{path}: JPEG image data cannot be decoded"):
        write_samples(model.eval(), dataset, tmp_path, torch.device("cpu"))
    assert not (tmp_path / SAMPLES).exists()


@pytest.mark.slow
def test_cli_train_and_evaluate_with_a_damaged_image_exit_2_naming_it(tmp_path, damaged_root):
    """The issue's example: `emanet evaluate` (and training, in DataLoader workers) on a damaged image."""
    short = ("train.iterations=2", "train.batch_size=2", "train.checkpoint_interval=2", "train.log_interval=2")
    trained = emanet(run_args("train", tmp_path / "results", damaged_root.parent, *short))
    assert trained.returncode == 0, trained.stderr[-3000:]
    victim = _damage(_prepared_file(damaged_root, "val", "images", index=1), "truncated")
    done = emanet(run_args("evaluate", tmp_path / "results", damaged_root.parent, *short))
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"{victim}: JPEG image data cannot be decoded" in done.stderr and "Traceback" not in done.stderr

    for image in (damaged_root / "images").glob("*.jpg"):  # whichever image the sampler draws first
        _damage(image, "garbage")
    done = emanet(run_args("train", tmp_path / "again", damaged_root.parent, *short, "data.workers=1"))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "is not an image file Pillow can identify" in done.stderr and f"{damaged_root / 'images'}/" in done.stderr
    assert "Traceback" not in done.stderr and "DataLoader worker" not in done.stderr, done.stderr[-3000:]


# --- the evaluation server's package -----------------------------------------------------------------------


def _png_folder(folder: Path, ids: list[str]) -> Path:
    """Predictions (or ground truth) <id>.png, one palette PNG per id."""
    folder.mkdir(parents=True)
    for image_id in ids:
        (folder / f"{image_id}.png").write_bytes(palette_png(_label()))
    return folder


def _tarball(path: Path, members: dict[str, bytes]) -> Path:
    with gzip.open(path, "wb") as zipped, tarfile.open(fileobj=zipped, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{submission.RESULTS_DIR}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_submission_refuses_damaged_pngs_in_the_package_the_labels_and_the_predictions(tmp_path, kind):
    ids = ["2008_000001", "2008_000002"]
    labels = _png_folder(tmp_path / "gt", ids)
    good = palette_png(_label())
    tarball = _tarball(tmp_path / "pkg.tar.gz", {"2008_000001.png": good, "2008_000002.png": DAMAGE[kind](good)})
    with pytest.raises(
        DataError,
        match=rf"pkg.tar.gz:{submission.RESULTS_DIR}/2008_000002.png: .*package the "
        r"predictions again",
    ):
        submission.score(tarball, labels, ids, 21)

    fine = submission.package(_png_folder(tmp_path / "ok", ids), ids, tmp_path / "fine.tar.gz")
    assert submission.score(fine, labels, ids, 21).sum() == 2 * _label().size
    victim = _damage(labels / "2008_000001.png", kind)
    with pytest.raises(DataError, match=rf"{victim}: .*restore the ground truth"):
        submission.score(fine, labels, ids, 21)

    pred = _png_folder(tmp_path / "bad", ids)
    victim = _damage(pred / "2008_000002.png", kind)
    with pytest.raises(DataError, match=rf"{victim}: .*predict again"):
        submission.package(pred, ids, tmp_path / "never.tar.gz")
    assert not (tmp_path / "never.tar.gz").exists()


def test_a_package_member_that_is_a_jpeg_is_refused(tmp_path):
    tarball = _tarball(tmp_path / "pkg.tar.gz", {"2008_000001.png": _jpeg()})
    with pytest.raises(DataError, match="2008_000001.png: must be an indexed .* PNG, got a JPEG image"):
        submission.read_package(tarball, ["2008_000001"])


def test_decode_image_reads_bytes_under_a_given_name():
    im = decode_image("pkg.tar.gz:x.png", "fix it", palette_png(_label()))
    assert im.mode == "P" and np.array_equal(np.array(im), _label())
    with pytest.raises(DataError, match="^pkg.tar.gz:x.png: is empty .*; fix it$"):
        decode_image("pkg.tar.gz:x.png", "fix it", b"")


def _tar_with(source: Path, dest: Path, damaged_member: str | None) -> Path:
    """A copy of the tar ``source`` with one member truncated (or none)."""
    with tarfile.open(source) as src, tarfile.open(dest, "w") as out:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name == damaged_member:
                data = _truncated(data)
                member.size = len(data)
            out.addfile(member, io.BytesIO(data) if data is not None else None)
    return dest


def test_replacing_a_damaged_archive_fixes_the_rerun(tmp_path, raw_dir):
    """The fix the error gives (re-download the archive) must work: prepare extracts a replaced archive again
    instead of reusing the tree extracted from the damaged one."""
    good = tmp_path / "good.tar"
    shutil.copy(raw_dir / catalog.VOC2012.name, good)
    with tarfile.open(good) as tar:
        victim = sorted(n for n in tar.getnames() if "/JPEGImages/" in n)[0]
    _tar_with(good, raw_dir / catalog.VOC2012.name, victim)
    with pytest.raises(DataError, match=r"JPEGImages/.*\.jpg: JPEG image data cannot be decoded"):
        prepare("voc", raw_dir, tmp_path / "out", None, progress=False)
    shutil.copy(good, raw_dir / catalog.VOC2012.name)  # "re-download": a new file, a new modification time
    root = prepare("voc", raw_dir, tmp_path / "out", None, progress=False)
    assert read_meta(root)["counts"]["val"] > 0
    assert not [p for p in (raw_dir / "extracted").iterdir() if p.name.endswith(".stale")]


def test_an_unchanged_archive_keeps_its_extraction_and_a_changed_one_loses_it(tmp_path, raw_dir):
    target = extracted(raw_dir, catalog.VOC2012.name)
    marker = target / "kept.txt"
    marker.write_text("extracted once")
    assert drop_stale_extractions(raw_dir) == [] and marker.exists()
    archive = raw_dir / catalog.VOC2012.name
    os.utime(archive, ns=(archive.stat().st_atime_ns, archive.stat().st_mtime_ns + 10**9))
    assert drop_stale_extractions(raw_dir) == [catalog.VOC2012.name] and not target.exists()
    assert extracted(raw_dir, catalog.VOC2012.name).is_dir() and not marker.exists()
