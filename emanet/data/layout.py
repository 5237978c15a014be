"""The prepared layout: the contract between ``emanet prepare`` (which writes it) and every reader of it.

One folder per dataset, ``ROOT = <data.root>/<dataset>``::

    ROOT/images/<id>.jpg      the original JPEG bytes (hard-linked to the raw file when possible)
    ROOT/labels/<id>.png      single-channel uint8 class ids, 255 = ignore, saved as palette PNGs with the
                              VOC colour map so they can be looked at (absent for a split without labels)
    ROOT/splits/<split>.txt   the split's ids, one per line (LF, final newline)
    ROOT/labels.md5           "<md5>  labels/<id>.png" per label file, sorted by id
    ROOT/meta.json            written last: its presence means the folder is complete (see :func:`read_meta`)

:mod:`emanet.data.convert.prepare` writes it with the helpers here; :mod:`emanet.data.loading` (and the
engine) read it with them, so neither side imports the other. Nothing here knows how a dataset was
converted or how it is fed to a model.
"""

from __future__ import annotations

import json
from pathlib import Path

from emanet.data.files import DataError
from emanet.io import atomic_write_json, atomic_write_text
from emanet.textfile import read_text_file

IMAGES = "images"
LABELS = "labels"
SPLITS = "splits"
LABEL_MANIFEST = "labels.md5"
META = "meta.json"


def image_path(root: str | Path, image_id: str) -> Path:
    """``ROOT/images/<id>.jpg``."""
    return Path(root) / IMAGES / f"{image_id}.jpg"


def label_path(root: str | Path, image_id: str) -> Path:
    """``ROOT/labels/<id>.png``."""
    return Path(root) / LABELS / f"{image_id}.png"


def split_path(root: str | Path, split: str) -> Path:
    """``ROOT/splits/<split>.txt``."""
    return Path(root) / SPLITS / f"{split}.txt"


def is_prepared(root: str | Path) -> bool:
    """True when ``root`` holds a meta.json, i.e. a prepare ran to completion there (it is written last)."""
    return (Path(root) / META).is_file()


def make_folders(root: str | Path) -> None:
    """Create ``ROOT/{images,labels,splits}`` in a fresh (empty) ``root``; FileExistsError if one exists."""
    for name in (IMAGES, LABELS, SPLITS):
        (Path(root) / name).mkdir()


def write_split(root: str | Path, split: str, ids: list[str]) -> Path:
    """Write ``ROOT/splits/<split>.txt``: one id a line, LF, final newline (atomically)."""
    return atomic_write_text(split_path(root, split), "".join(f"{i}\n" for i in ids))


def write_label_manifest(root: str | Path, text: str) -> Path:
    """Write ``ROOT/labels.md5`` (``"<md5>  labels/<id>.png\\n"`` lines; empty without labels)."""
    return atomic_write_text(Path(root) / LABEL_MANIFEST, text)


def write_meta(root: str | Path, meta: dict) -> Path:
    """Write ``ROOT/meta.json`` after checking it against what :func:`read_meta` accepts, so a prepare
    can never leave a meta.json its readers refuse. Raises DataError naming the file and the problem
    (a bug in the writer, not in the data)."""
    path = Path(root) / META
    problem = _meta_problem(meta)
    if problem:
        raise DataError(f"{path}: refusing to write a meta.json that readers would refuse: {problem}")
    return atomic_write_json(path, meta)


def read_meta(root: str | Path) -> dict:
    """A prepared dataset's meta.json; a missing one means the dataset was never (fully) prepared.

    Returns the JSON object as written by ``prepare``, checked for what every reader uses: ``dataset``
    (str), ``classes`` (non-empty list of str), ``num_classes`` (int, = len(classes)), ``ignore_index``
    (int), ``counts`` ({split: int >= 0}), ``label_checksum`` (str, or null beside an ``image_checksum``
    str), ``unlabelled_splits`` (list of str, optional). Raises DataError naming the file when it is
    missing, not UTF-8 JSON, or any of those is absent or of the wrong type."""
    path = Path(root) / META
    if not path.is_file():
        raise DataError(f"{path}: not found; run `emanet prepare` first")
    redo = f"it was edited or damaged: delete {Path(root)} and run `emanet prepare` again"
    try:
        meta = json.loads(read_text_file(path, DataError))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); {redo}") from None
    problem = _meta_problem(meta)
    if problem:
        raise DataError(f"{path}: {problem}; {redo}")
    return meta


def _meta_problem(meta: object) -> str | None:
    """What is wrong with a loaded meta.json for its readers, or None."""
    if not isinstance(meta, dict):
        return f"must hold a JSON object, holds a JSON {type(meta).__name__}"

    def whole(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def texts(value: object) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    rules = [
        ("dataset", lambda v: isinstance(v, str), "a string"),
        ("classes", lambda v: texts(v) and len(v) > 0, "a non-empty list of class names"),
        ("num_classes", lambda v: whole(v) and v == len(meta["classes"]), "the number of classes"),
        ("ignore_index", whole, "an integer"),
        (
            "counts",
            lambda v: isinstance(v, dict) and all(whole(n) and n >= 0 for n in v.values()),
            "an object of split sizes",
        ),
        (
            "label_checksum",
            lambda v: isinstance(v, str) or (v is None and isinstance(meta.get("image_checksum"), str)),
            "a string (or null, beside an image_checksum string)",
        ),
        ("unlabelled_splits", texts, "a list of split names"),
    ]
    for key, fits, what in rules:
        if key not in meta:
            if key != "unlabelled_splits":
                return f"has no {key!r}"
        elif not fits(meta[key]):
            return f"{key!r} must be {what}, got {json.dumps(meta[key])[:80]}"
    return None
