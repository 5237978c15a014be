"""Finding official trees (downloaded archives or already-extracted folders) and reading their files.

Every reader follows datasets.md §1: label PNGs as raw indices (``np.array`` of the P or L image, never
``convert``), list files with LF or CRLF, with or without a final newline, plain or DeepLab two-column,
class files split on the first ``": "`` only. Errors name the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from emanet.data.fetch import safe_extract


class DataError(ValueError):
    """Bad or missing input data; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Sample:
    """One image of a converted dataset: where its JPEG is, where its label is and how to read it.

    ``label`` and ``reader`` are None for a split without public labels (VOC test)."""

    image_id: str
    image: Path
    label: Path | None
    reader: str | None  # a key of emanet.data.prepare.READERS


def read_id_list(path: Path) -> list[str]:
    """Ids of a split list: one per line, or DeepLab's ``/JPEGImages/<id>.jpg /Seg…/<id>.png``."""
    if not path.is_file():
        raise DataError(f"{path}: list file not found")
    ids = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            ids.append(Path(line.split()[0]).stem)
    return ids


def read_class_file(path: Path) -> dict[int, str]:
    """``"<k>: <name>"`` lines -> {k: name}; split on the first ": " only, names stripped."""
    if not path.is_file():
        raise DataError(f"{path}: class list not found")
    classes = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, name = line.partition(": ")
        if not sep or not key.strip().isdigit():
            raise DataError(f"{path}:{number}: expected '<k>: <name>', got {line!r}")
        classes[int(key)] = name.strip()
    return classes


def read_index_png(path: Path) -> np.ndarray:
    """A label PNG's stored indices (mode P or L); anything else is an error naming the file."""
    with Image.open(path) as im:
        if im.mode not in ("P", "L"):
            raise DataError(f"{path}: label PNG must be palette (P) or grayscale (L), got mode {im.mode}")
        return np.array(im)


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def mat_field(path: Path, variable: str, field: str | None = None) -> np.ndarray:
    """A variable (or a field of a MATLAB struct variable) from a v5 ``.mat`` file."""
    try:
        data = scipy.io.loadmat(path)
    except (OSError, ValueError, NotImplementedError) as exc:
        raise DataError(f"{path}: not a readable MATLAB v5 file ({exc})") from None
    if variable not in data:
        raise DataError(f"{path}: has no variable {variable!r} (found {sorted(k for k in data if not k.startswith('__'))})")
    value = data[variable]
    if field is not None:
        if value.dtype.names is None or field not in value.dtype.names:
            raise DataError(f"{path}: {variable} has no field {field!r}")
        value = value[field][0, 0]
    return np.asarray(value)


def check_values(path: Path, values: np.ndarray, allowed: Iterable[int]) -> None:
    """Raise naming the file and the offending values if ``values`` holds anything not in ``allowed``."""
    present = np.unique(values)
    bad = sorted(set(present.tolist()) - set(allowed))
    if bad:
        raise DataError(f"{path}: label values outside the classes: {bad[:10]}")


def find_dir(raw_dir: Path, pattern: str, max_depth: int = 4, marker: str | None = None) -> Path | None:
    """The shallowest folder under ``raw_dir`` whose path ends with ``pattern`` (e.g. VOCdevkit/VOC2012)
    and, with ``marker``, that holds that file: the VOC trainval and test archives both unpack to
    VOCdevkit/VOC2012, and each converter must find its own."""
    parts = pattern.strip("/").split("/")

    def fits(path: Path) -> bool:
        return path.is_dir() and (marker is None or (path / marker).is_file())

    if raw_dir.parts[-len(parts):] == tuple(parts) and fits(raw_dir):
        return raw_dir
    for depth in range(max_depth):
        glob = "/".join(["*"] * depth + parts) if depth else pattern
        hits = sorted(p for p in raw_dir.glob(glob) if fits(p))
        if hits:
            return hits[0]
    return None


def extracted(raw_dir: Path, archive_name: str, members: list[str] | None = None) -> Path:
    """The folder ``raw_dir/extracted/<archive name>/``, unpacking the archive (safely, atomically) once."""
    archive = raw_dir / archive_name
    target = raw_dir / "extracted" / archive_name
    if target.exists():
        return target
    if not archive.is_file():
        raise DataError(f"{raw_dir}: has no {archive_name} and no extracted copy of it (run `emanet download` first)")
    return safe_extract(archive, target, members)


def locate(raw_dir: Path, pattern: str, archive_name: str, members: list[str] | None = None,
           marker: str | None = None) -> Path:
    """An extracted tree ending in ``pattern`` (holding ``marker``), extracting ``archive_name`` if needed."""
    found = find_dir(raw_dir, pattern, marker=marker)
    if found:
        return found
    if not (raw_dir / archive_name).is_file() and not (raw_dir / "extracted" / archive_name).exists():
        raise DataError(f"{raw_dir}: neither an extracted '{pattern}' folder nor the archive {archive_name} "
                        f"(run `emanet download` first)")
    found = find_dir(extracted(raw_dir, archive_name, members), pattern, marker=marker)
    if not found:
        raise DataError(f"{raw_dir / archive_name}: has no '{pattern}' folder" + (f" with {marker}" if marker else ""))
    return found


def stems(folder: Path, suffix: str) -> set[str]:
    return {p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}")} if folder.is_dir() else set()


def listing(ids: Iterable[str], limit: int = 10) -> str:
    """A short, sorted list of ids for error messages."""
    ids = sorted(ids)
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more
