"""Test-set predictions packaged for the PASCAL VOC evaluation server, and scoring such a package.

The VOC 2012 test labels are not public (docs/datasets.md#pascal-voc-2012): the server takes a tar archive holding
``results/VOC2012/Segmentation/comp6_test_cls/<id>.png``, one indexed PNG (VOC palette) per test image
(``comp6``: trained with data beyond VOC, here COCO). :func:`package` writes it; :func:`score` reads a
package back as the server would (exact paths, every id once, one label per pixel) and scores it
against ground truth, which only the synthetic data of the tiny profile has (``eval.server_labels``).
For the real test set, the server's answer is entered with ``emanet submission record``.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import torch

from emanet.data.files import DataError, decode_image, listing, read_index_png
from emanet.engine.metrics import confusion_matrix
from emanet.io import atomic_write_bytes

SERVER_URL = "http://host.robots.ox.ac.uk:8080/"
RESULTS_DIR = "results/VOC2012/Segmentation/comp6_test_cls"
_MTIME = 946684800  # fixed (2000-01-01) so the same predictions give the same archive
_REPACKAGE = "package the predictions again (`emanet evaluate` writes the package)"


def package(pred_dir: Path, ids: list[str], tarball: Path) -> Path:
    """``tarball`` (.tar.gz) with ``RESULTS_DIR/<id>.png`` for every id, written atomically."""
    missing = [i for i in ids if not (pred_dir / f"{i}.png").is_file()]
    if missing:
        raise DataError(f"{pred_dir}: {len(missing)} predictions are missing: {listing(missing)}")
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for image_id in sorted(ids):
            path = pred_dir / f"{image_id}.png"
            data = path.read_bytes()
            decode_image(path, "delete it and predict again (`emanet evaluate`)", data)  # never ship a damaged PNG
            info = tarfile.TarInfo(f"{RESULTS_DIR}/{image_id}.png")
            info.size, info.mtime, info.mode = len(data), _MTIME, 0o644
            tar.addfile(info, io.BytesIO(data))
    return atomic_write_bytes(tarball, buffer.getvalue())


def read_package(tarball: Path, ids: list[str]) -> dict[str, np.ndarray]:
    """id -> predicted class map from a package; anything the server would refuse is an error naming it."""
    try:
        with tarfile.open(tarball) as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            expected = {f"{RESULTS_DIR}/{i}.png": i for i in ids}
            absent, extra = set(expected) - set(members), set(members) - set(expected)
            if absent or extra:
                raise DataError(
                    f"{tarball}: {len(absent)} test images lack a {RESULTS_DIR}/<id>.png "
                    f"({listing(expected[n] for n in absent)}); {len(extra)} unexpected files "
                    f"({listing(extra)})"
                )
            return {
                image_id: _png(tarball, name, tar.extractfile(members[name]).read())
                for name, image_id in expected.items()
            }
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{tarball}: not a readable tar archive ({exc})") from None


def _png(tarball: Path, name: str, data: bytes) -> np.ndarray:
    """A package member's class map, fully decoded; damaged or non-indexed PNGs are errors naming it."""
    im = decode_image(f"{tarball}:{name}", _REPACKAGE, data)
    if im.format != "PNG" or im.mode not in ("P", "L"):
        raise DataError(
            f"{tarball}:{name}: must be an indexed (P) or grayscale PNG, got a {im.format} image in mode {im.mode}"
        )
    return np.array(im)


def score(tarball: Path, labels_dir: Path, ids: list[str], num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """The confusion matrix of a package against ground-truth PNGs ``labels_dir/<id>.png``."""
    predictions = read_package(tarball, ids)
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for image_id, pred in predictions.items():
        label_path = Path(labels_dir) / f"{image_id}.png"
        if not label_path.is_file():
            raise DataError(f"{label_path}: no ground truth for test image {image_id}")
        label = read_index_png(
            label_path,
            f"restore the ground truth in {labels_dir} (the tiny profile's come "
            f"from `emanet synth`, in data/<profile>/synth/server/)",
        )
        if pred.shape != label.shape:
            raise DataError(
                f"{tarball}:{RESULTS_DIR}/{image_id}.png: is {pred.shape[1]}x{pred.shape[0]}, the "
                f"image is {label.shape[1]}x{label.shape[0]}"
            )
        if pred.max(initial=0) >= num_classes:
            raise DataError(f"{tarball}:{RESULTS_DIR}/{image_id}.png: class ids above {num_classes - 1}")
        matrix += confusion_matrix(torch.from_numpy(pred), torch.from_numpy(label), num_classes, ignore_index)
    return matrix
