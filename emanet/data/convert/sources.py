"""Finding official trees (downloaded archives or already-extracted folders) and reading their files.

Every reader follows docs/datasets.md#rules-for-every-reader:
label PNGs as raw indices (``np.array`` of the P or L image, never
``convert``), list files with LF or CRLF, with or without a final newline, plain or DeepLab two-column,
class files split on the first ``": "`` only. Text is read by :mod:`emanet.textfile` (UTF-8, BOM dropped);
images and label PNGs are decoded fully by :func:`decode_image`, so a truncated or corrupt file is refused
by name where it is read. Errors name the file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image, UnidentifiedImageError

from emanet.data.archives.transfer import safe_extract
from emanet.data.convert.matv5 import unsafe_element
from emanet.io import atomic_write_json
from emanet.textfile import text_lines


class DataError(ValueError):
    """Bad or missing input data; the message names the file and what is wrong."""


#: What to do about a damaged file taken from a downloaded archive (the end of decode errors).
REDOWNLOAD = ("re-download or re-extract the archive it came from (`emanet download` verifies checksums; "
              "delete the file's raw_dir/extracted/<archive> folder to extract it again)")
#: Errors Pillow raises for bytes it cannot identify or decode (zlib, struct and bomb errors included).
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, TypeError, IndexError, KeyError, struct.error,
                  zlib.error, Image.DecompressionBombError)


@dataclass(frozen=True)
class Sample:
    """One image of a converted dataset: where its JPEG is, where its label is and how to read it.

    ``label`` and ``reader`` are None for a split without public labels (VOC test)."""

    image_id: str
    image: Path
    label: Path | None
    reader: str | None  # a key of emanet.data.convert.prepare.READERS


def read_id_list(path: Path) -> list[str]:
    """Ids of a split list: one per line, or DeepLab's ``/JPEGImages/<id>.jpg /Seg…/<id>.png``.

    Read by :func:`emanet.textfile.read_text_file` (UTF-8; BOM dropped; LF, CRLF or CR); blank lines and
    surrounding blanks are ignored. Raises DataError naming the file if it is missing or not UTF-8 text,
    and naming the line if it holds no id (``/``, ``.``, ``..``)."""
    if not path.is_file():
        raise DataError(f"{path}: list file not found")
    ids = []
    for number, line in text_lines(path, DataError):
        image_id = Path(line.split()[0]).stem
        if image_id in ("", ".", ".."):
            raise DataError(f"{path}:{number}: {line!r} holds no image id; expected '<id>' or DeepLab's "
                            f"'/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png'")
        ids.append(image_id)
    return ids


def read_class_file(path: Path) -> dict[int, str]:
    """``"<k>: <name>"`` lines -> {k: name}; split on the first ": " only, names stripped.

    Read as :func:`read_id_list` reads list files; raises DataError naming the file (and the line)."""
    if not path.is_file():
        raise DataError(f"{path}: class list not found")
    classes = {}
    for number, line in text_lines(path, DataError):
        key, sep, name = line.partition(": ")
        key = key.strip()
        if not sep or not (key.isascii() and key.isdigit()):
            raise DataError(f"{path}:{number}: expected '<k>: <name>', got {line!r}")
        if int(key) in classes:
            raise DataError(f"{path}:{number}: class {int(key)} is listed twice ({classes[int(key)]!r} and "
                            f"{name.strip()!r}); each id must appear once")
        classes[int(key)] = name.strip()
    return classes


def read_index_png(path: Path, fix: str = REDOWNLOAD) -> np.ndarray:
    """A label PNG's class ids as a (H, W) uint8 array: the stored indices of a palette (P) image, the
    values of an 8-bit grayscale (L) one. A 1-bit grayscale PNG (what PNG optimisers make of an L label
    holding only 0 and 255) reads as 0 and 255, as every viewer shows it; 2- and 4-bit grayscale read
    scaled to 0..255 the same way (Pillow's reading, the PNG meaning of those samples).

    Decoded fully by :func:`decode_image` (``fix`` completes its error message). Any other mode (RGB,
    RGBA, LA, 16-bit, float) is a DataError naming the file and the mode."""
    im = decode_image(path, fix)
    if im.mode == "1":
        im = im.convert("L")
    if im.mode not in ("P", "L"):
        colour = im.mode in ("RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "HSV", "LAB")
        what = ("colours, not class ids: use the dataset's indexed label PNGs (e.g. VOC's SegmentationClass, "
                "not a visualisation)" if colour else "more than 8 bits per pixel: save the class ids as an "
                "8-bit palette or grayscale PNG")
        raise DataError(f"{path}: label PNG must be palette (P) or grayscale (L), got mode {im.mode}, which holds {what}")
    return np.array(im)


def decode_image(path: str | Path, fix: str = REDOWNLOAD, data: bytes | None = None) -> Image.Image:
    """The image at ``path`` (JPEG, PNG, any format Pillow reads), every pixel decoded (``Image.load``).

    A file that cannot be fully decoded fails here, by name, not later in a DataLoader worker as a bare
    ``OSError: image file is truncated``. ``data`` gives the bytes when they are not in a file of their
    own (a PNG inside a tar: ``path`` is then the name to report, e.g. ``pkg.tar.gz:results/…/x.png``).
    Returns the loaded image in its stored mode and size; no file stays open.

    Raises DataError "<path>: <what is wrong>; <fix>" for a missing or unreadable file, an empty file,
    bytes that are no image format Pillow knows (garbage), and truncated or corrupt image data.
    """
    if data is None:
        data = _read_bytes(path, "image file", fix)
    if not data:
        raise DataError(f"{path}: is empty (0 bytes), not an image; {fix}")
    try:
        im = Image.open(io.BytesIO(data))
    except _DECODE_ERRORS as exc:
        raise DataError(f"{path}: is not an image file Pillow can identify ({len(data):,} bytes starting "
                        f"{data[:8].hex(' ')}: {_reason(exc)}); {fix}") from None
    try:
        im.load()
    except _DECODE_ERRORS as exc:
        raise DataError(f"{path}: {im.format} image data cannot be decoded, the file is truncated or corrupt "
                        f"({_reason(exc)}); {fix}") from None
    return im


def image_size(path: Path, fix: str = REDOWNLOAD) -> tuple[int, int]:
    """(height, width) of the image at ``path``, after decoding every pixel (:func:`decode_image`), so a
    truncated or corrupt image fails here, naming the file. About 1 ms for a 500x375 JPEG."""
    im = decode_image(path, fix)
    return im.height, im.width


def _reason(exc: BaseException) -> str:
    """Pillow's reason, without the BytesIO repr it puts in 'cannot identify image file <...>'."""
    return "unknown format" if isinstance(exc, UnidentifiedImageError) else f"{type(exc).__name__}: {exc}"


def _read_bytes(path: str | Path, what: str, fix: str) -> bytes:
    """The bytes of ``path``; DataError "<path>: <what> not found" or "cannot be read", with ``fix``."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found; {fix}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); {fix}") from None


def mat_field(path: Path, variable: str, field: str | None = None) -> np.ndarray:
    """A label map stored in a MATLAB v4-v7 ``.mat`` file: the variable ``variable`` (Context ``LabelMap``,
    COCO-Stuff-10k ``S``), or its field ``field`` when it is a struct (SBD ``GTcls.Segmentation``).

    Returns the 2-D array as stored (integer, float or logical dtype). Raises DataError naming the file for
    an unreadable, empty, truncated or corrupt file, a v7.3 (HDF5) file, a missing variable or field, and
    a value that is not a non-empty 2-D numeric array (struct, cell, text, sparse, complex, empty, 3-D).
    A damaged file that would crash scipy's reader (:mod:`emanet.data.convert.matv5`) is refused before it is read."""
    raw = _read_bytes(path, "annotation file", REDOWNLOAD)
    crash = unsafe_element(raw)
    if crash:
        raise DataError(f"{path}: damaged MATLAB file: {crash}; {REDOWNLOAD}")
    try:
        data = scipy.io.loadmat(io.BytesIO(raw))
    except NotImplementedError as exc:  # what scipy says to a v7.3 file
        raise DataError(f"{path}: is a MATLAB v7.3 (HDF5) file ({exc}), which scipy cannot read; re-save it as "
                        f"v7 in MATLAB (`save(file, '{variable}', '-v7')`) or use the dataset's original "
                        f"files") from None
    except Exception as exc:  # noqa: BLE001 - on damaged bytes scipy raises MatReadError, ValueError, TypeError,
        # IndexError (a file shorter than its 128-byte header), zlib.error, OverflowError, MemoryError...
        raise DataError(f"{path}: not a readable MATLAB v5 file, empty, truncated or corrupt ({exc}); "
                        f"{REDOWNLOAD}") from None
    if not any(not k.startswith("__") for k in data):
        raise DataError(f"{path}: holds no variables at all (truncated after its header?); {REDOWNLOAD}")
    if variable not in data:
        raise DataError(f"{path}: has no variable {variable!r} (found {sorted(k for k in data if not k.startswith('__'))})")
    value, where = data[variable], variable
    if field is not None:
        if not isinstance(value, np.ndarray) or value.dtype.names is None or field not in value.dtype.names:
            raise DataError(f"{path}: {variable} has no field {field!r} (it is {_matlab_kind(value)})")
        if value.size == 0:
            raise DataError(f"{path}: {variable} is an empty struct array, with no {field!r} to read; {REDOWNLOAD}")
        value, where = value[field].flat[0], f"{variable}.{field}"
    if (not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf" or value.ndim != 2
            or value.size == 0):
        raise DataError(f"{path}: {where} must be a non-empty 2-D numeric label map, but it is "
                        f"{_matlab_kind(value)}; use the dataset's own annotation files ({REDOWNLOAD})")
    return value


def _matlab_kind(value: object) -> str:
    """What a loaded MATLAB value is, in MATLAB's terms, for error messages."""
    if scipy.sparse.issparse(value):
        return f"a sparse {value.shape[0]}x{value.shape[1]} matrix"
    if not isinstance(value, np.ndarray):
        return f"a {type(value).__name__}"
    shape = "x".join(map(str, value.shape))
    if value.dtype.names:
        return f"a {shape} struct array with fields {', '.join(value.dtype.names)}"
    kind = {"O": "cell array", "U": "char array", "S": "char array", "c": "complex array"}.get(value.dtype.kind)
    return f"a {shape} {kind or f'{value.dtype} array'}"


def check_values(path: Path, values: np.ndarray, allowed: Iterable[int]) -> None:
    """Raise naming the file and the offending values if ``values`` holds anything not in ``allowed``.

    ``values`` must be numeric (integer, float or bool); NaN, infinities and fractions are never allowed."""
    values, allowed = np.asarray(values), sorted(set(allowed))
    if values.dtype.kind not in "biuf":
        raise DataError(f"{path}: label values must be class ids (numbers), got a {values.dtype} array")
    present = np.unique(values)
    bad = sorted(set(present.tolist()) - set(allowed), key=lambda v: (v != v, v))  # NaN last
    if bad:
        raise DataError(f"{path}: label values outside the classes: {bad[:10]} (allowed: {_runs(allowed)}); "
                        f"is it a label map of this dataset, in its original numbering?")


def _runs(ids: list[int]) -> str:
    """[0, 1, ..., 20, 255] -> '0..20, 255'."""
    runs: list[list[int]] = []
    for k in ids:
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return ", ".join(f"{a}..{b}" if b > a else f"{a}" for a, b in runs)


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
    """The folder ``raw_dir/extracted/<archive name>/``, unpacking the archive (safely, atomically) once.

    Beside it, ``.<archive name>.source.json`` records the archive's size and modification time at
    extraction, so :func:`drop_stale_extractions` can tell when the archive was replaced afterwards."""
    archive = raw_dir / archive_name
    target = raw_dir / "extracted" / archive_name
    if target.exists():
        return target
    if not archive.is_file():
        raise DataError(f"{raw_dir}: has no {archive_name} and no extracted copy of it (run `emanet download` first)")
    safe_extract(archive, target, members)
    atomic_write_json(_source_stamp(target), _archive_identity(archive))
    return target


def drop_stale_extractions(raw_dir: Path) -> list[str]:
    """Remove every ``raw_dir/extracted/<archive>/`` whose archive beside it has changed (size or modification
    time) since it was extracted, so the next read extracts the new archive instead of reusing the old tree:
    a re-downloaded or hand-replaced archive fixes a bad file, as the errors promise. Extractions without a
    record (made before records were kept) and archives that are gone are left alone. Returns the names
    of the archives whose extraction was dropped. The tree is renamed aside before it is deleted, so an
    interruption never leaves a half-deleted tree under the trusted name."""
    dropped = []
    root = raw_dir / "extracted"
    for target in sorted(root.iterdir()) if root.is_dir() else []:
        archive, stamp = raw_dir / target.name, _source_stamp(target)
        if not target.is_dir() or target.name.startswith(".") or not archive.is_file() or not stamp.is_file():
            continue
        try:
            recorded = json.loads(stamp.read_text())
        except (OSError, ValueError):
            recorded = None
        if recorded == _archive_identity(archive):
            continue
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".stale", dir=root))
        os.replace(target, aside / target.name)
        stamp.unlink(missing_ok=True)
        shutil.rmtree(aside, ignore_errors=True)
        dropped.append(target.name)
    return dropped


def _source_stamp(target: Path) -> Path:
    return target.parent / f".{target.name}.source.json"


def _archive_identity(archive: Path) -> dict[str, int]:
    info = archive.stat()
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


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
