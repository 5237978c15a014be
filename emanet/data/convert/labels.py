"""Official label files -> uint8 train ids: one reader per label format, each validating the raw values.

A :class:`~emanet.data.convert.conversion.Sample` carries the reader of its label file itself (one of
:data:`LABEL_READERS`), so a converter names the format by a function that must exist, never by a string
tag that a typo could turn into "no reader". Every reader takes the label file's path and returns a
(H, W) uint8 array of train ids (255 = ignore), after refusing, by file name, a file that cannot be read
(:func:`emanet.data.files.read_index_png`, :func:`mat_field`) and raw values outside the format's ids
(:func:`check_values`). The readers are module-level functions, so a Sample pickles for the worker pool.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse

from emanet.data.classes import CONTEXT_NUM_RAW, IGNORE, coco_voc_lut, cocostuff_lut, context59_lut
from emanet.data.convert.matv5 import unsafe_element
from emanet.data.files import REDOWNLOAD, DataError, read_bytes, read_index_png

#: A label reader: the label file's path -> (H, W) uint8 train ids; raises DataError naming the file.
LabelReader = Callable[[Path], np.ndarray]


def mat_field(path: Path, variable: str, field: str | None = None) -> np.ndarray:
    """A label map stored in a MATLAB v4-v7 ``.mat`` file: the variable ``variable`` (Context ``LabelMap``,
    COCO-Stuff-10k ``S``), or its field ``field`` when it is a struct (SBD ``GTcls.Segmentation``).

    Returns the 2-D array as stored (integer, float or logical dtype). Raises DataError naming the file for
    an unreadable, empty, truncated or corrupt file, a v7.3 (HDF5) file, a missing variable or field, and
    a value that is not a non-empty 2-D numeric array (struct, cell, text, sparse, complex, empty, 3-D).
    A damaged file that would crash scipy's reader (:mod:`emanet.data.convert.matv5`) is refused before it is read."""
    raw = read_bytes(path, "annotation file", REDOWNLOAD)
    crash = unsafe_element(raw)
    if crash:
        raise DataError(f"{path}: damaged MATLAB file: {crash}; {REDOWNLOAD}")
    try:
        data = scipy.io.loadmat(io.BytesIO(raw))
    except NotImplementedError as exc:  # what scipy says to a v7.3 file
        raise DataError(
            f"{path}: is a MATLAB v7.3 (HDF5) file ({exc}), which scipy cannot read; re-save it as "
            f"v7 in MATLAB (`save(file, '{variable}', '-v7')`) or use the dataset's original "
            f"files"
        ) from None
    except Exception as exc:  # noqa: BLE001 - on damaged bytes scipy raises MatReadError, ValueError, TypeError,
        # IndexError (a file shorter than its 128-byte header), zlib.error, OverflowError, MemoryError...
        raise DataError(
            f"{path}: not a readable MATLAB v5 file, empty, truncated or corrupt ({exc}); {REDOWNLOAD}"
        ) from None
    if not any(not k.startswith("__") for k in data):
        raise DataError(f"{path}: holds no variables at all (truncated after its header?); {REDOWNLOAD}")
    if variable not in data:
        raise DataError(
            f"{path}: has no variable {variable!r} (found {sorted(k for k in data if not k.startswith('__'))})"
        )
    value, where = data[variable], variable
    if field is not None:
        if not isinstance(value, np.ndarray) or value.dtype.names is None or field not in value.dtype.names:
            raise DataError(f"{path}: {variable} has no field {field!r} (it is {_matlab_kind(value)})")
        if value.size == 0:
            raise DataError(f"{path}: {variable} is an empty struct array, with no {field!r} to read; {REDOWNLOAD}")
        value, where = value[field].flat[0], f"{variable}.{field}"
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf" or value.ndim != 2 or value.size == 0:
        raise DataError(
            f"{path}: {where} must be a non-empty 2-D numeric label map, but it is "
            f"{_matlab_kind(value)}; use the dataset's own annotation files ({REDOWNLOAD})"
        )
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
        raise DataError(
            f"{path}: label values outside the classes: {bad[:10]} (allowed: {_runs(allowed)}); "
            f"is it a label map of this dataset, in its original numbering?"
        )


def _runs(ids: list[int]) -> str:
    """[0, 1, ..., 20, 255] -> '0..20, 255'."""
    runs: list[list[int]] = []
    for k in ids:
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return ", ".join(f"{a}..{b}" if b > a else f"{a}" for a, b in runs)


_VOC_VALUES = [*range(21), IGNORE]


def voc_png(path: Path) -> np.ndarray:
    """A VOC ``SegmentationClass`` (or ``SegmentationClassAug``) PNG: ids 0..20 and 255 kept as they are."""
    label = read_index_png(path)
    check_values(path, label, _VOC_VALUES)
    return label


def sbd_mat(path: Path) -> np.ndarray:
    """An SBD ``cls/<id>.mat``: ``GTcls.Segmentation``, ids 0..20 (SBD has no 255 band)."""
    seg = mat_field(path, "GTcls", "Segmentation")
    check_values(path, seg, range(21))
    return seg.astype(np.uint8)


def context_mat(path: Path) -> np.ndarray:
    """A PASCAL Context ``trainval/<id>.mat``: ``LabelMap`` ids 0..459 -> Context-59 (others -> 255)."""
    label_map = mat_field(path, "LabelMap")
    check_values(path, label_map, range(CONTEXT_NUM_RAW + 1))
    return context59_lut()[label_map.astype(np.int64)]


def cocostuff10k_mat(path: Path) -> np.ndarray:
    """A COCO-Stuff-10k v1.1 ``annotations/<id>.mat``: ``S`` in labels.txt ids (0 = unlabeled) -> 171 ids."""
    s = mat_field(path, "S")
    check_values(path, s, range(183))
    return cocostuff_lut(first_id=1)[s.astype(np.int64)]


def cocostuff164k_png(path: Path) -> np.ndarray:
    """A COCO-Stuff-164k stuffthingmaps PNG: labels.txt id - 1, 255 = unlabeled -> 171 ids."""
    label = read_index_png(path)
    check_values(path, label, [*range(182), IGNORE])
    return cocostuff_lut(first_id=0)[label]


def coco_voc_png(path: Path) -> np.ndarray:
    """A COCO-Stuff-164k stuffthingmaps PNG relabelled to VOC's 21 classes (``classes.coco_voc_lut``)."""
    label = read_index_png(path)
    check_values(path, label, [*range(182), IGNORE])
    return coco_voc_lut()[label]


#: Every label reader, for checks and tests (a Sample holds the function itself).
LABEL_READERS: tuple[LabelReader, ...] = (
    voc_png,
    sbd_mat,
    context_mat,
    cocostuff10k_mat,
    cocostuff164k_png,
    coco_voc_png,
)
