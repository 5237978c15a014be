"""Reading the files every stage shares, by one set of rules, and the error they all raise.

The low-level readers both sides of the prepared layout need: :mod:`emanet.data.convert` reads the
official trees with them, :mod:`emanet.data.loading` reads the prepared copy with them (and
:mod:`emanet.engine` reads user images and submissions). Every reader follows
docs/datasets.md#rules-for-every-reader: label PNGs as raw indices (``np.array`` of the P or L image,
never ``convert``), list files with LF or CRLF, with or without a final newline, plain or DeepLab
two-column, class files split on the first ``": "`` only. Text is read by :mod:`emanet.textfile` (UTF-8,
BOM dropped); images and label PNGs are decoded fully by :func:`decode_image`, so a truncated or corrupt
file is refused by name where it is read. Errors are :class:`DataError` and name the file.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from emanet.textfile import text_lines


class DataError(ValueError):
    """Bad or missing input data; the message names the file and what is wrong."""


#: What to do about a damaged file taken from a downloaded archive (the end of decode errors).
REDOWNLOAD = (
    "re-download or re-extract the archive it came from (`emanet download` verifies checksums; "
    "delete the file's raw_dir/extracted/<archive> folder to extract it again)"
)
#: Errors Pillow raises for bytes it cannot identify or decode (zlib, struct and bomb errors included).
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    EOFError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


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
            raise DataError(
                f"{path}:{number}: {line!r} holds no image id; expected '<id>' or DeepLab's "
                f"'/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png'"
            )
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
            raise DataError(
                f"{path}:{number}: class {int(key)} is listed twice ({classes[int(key)]!r} and "
                f"{name.strip()!r}); each id must appear once"
            )
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
        what = (
            "colours, not class ids: use the dataset's indexed label PNGs (e.g. VOC's SegmentationClass, "
            "not a visualisation)"
            if colour
            else "more than 8 bits per pixel: save the class ids as an 8-bit palette or grayscale PNG"
        )
        raise DataError(
            f"{path}: label PNG must be palette (P) or grayscale (L), got mode {im.mode}, which holds {what}"
        )
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
        data = read_bytes(path, "image file", fix)
    if not data:
        raise DataError(f"{path}: is empty (0 bytes), not an image; {fix}")
    try:
        im = Image.open(io.BytesIO(data))
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"{path}: is not an image file Pillow can identify ({len(data):,} bytes starting "
            f"{data[:8].hex(' ')}: {_reason(exc)}); {fix}"
        ) from None
    try:
        im.load()
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"{path}: {im.format} image data cannot be decoded, the file is truncated or corrupt "
            f"({_reason(exc)}); {fix}"
        ) from None
    return im


def image_size(path: Path, fix: str = REDOWNLOAD) -> tuple[int, int]:
    """(height, width) of the image at ``path``, after decoding every pixel (:func:`decode_image`), so a
    truncated or corrupt image fails here, naming the file. About 1 ms for a 500x375 JPEG."""
    im = decode_image(path, fix)
    return im.height, im.width


def _reason(exc: BaseException) -> str:
    """Pillow's reason, without the BytesIO repr it puts in 'cannot identify image file <...>'."""
    return "unknown format" if isinstance(exc, UnidentifiedImageError) else f"{type(exc).__name__}: {exc}"


def read_bytes(path: str | Path, what: str, fix: str) -> bytes:
    """The bytes of ``path``; DataError "<path>: <what> not found" or "cannot be read", with ``fix``."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found; {fix}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); {fix}") from None


def listing(ids: Iterable[str], limit: int = 10) -> str:
    """A short, sorted list of ids for error messages."""
    ids = sorted(ids)
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more
