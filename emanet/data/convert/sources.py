"""Finding official trees: downloaded archives or already-extracted folders, extracted safely once.

Each converter (:mod:`~emanet.data.convert.voc`, :mod:`~emanet.data.convert.context`,
:mod:`~emanet.data.convert.cocostuff`) asks :func:`locate` for the folder it reads; an archive is unpacked
into ``raw_dir/extracted/<archive>/`` (:func:`extracted`) and re-extracted when it was replaced
(:func:`drop_stale_extractions`). The files inside are read by :mod:`emanet.data.files` (lists, class
files, images) and :mod:`emanet.data.convert.labels` (label maps). Errors are DataError naming the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from emanet.data.archives.transfer import safe_extract
from emanet.data.files import DataError
from emanet.io import atomic_write_json


def find_dir(raw_dir: Path, pattern: str, max_depth: int = 4, marker: str | None = None) -> Path | None:
    """The shallowest folder under ``raw_dir`` whose path ends with ``pattern`` (e.g. VOCdevkit/VOC2012)
    and, with ``marker``, that holds that file: the VOC trainval and test archives both unpack to
    VOCdevkit/VOC2012, and each converter must find its own."""
    parts = pattern.strip("/").split("/")

    def fits(path: Path) -> bool:
        return path.is_dir() and (marker is None or (path / marker).is_file())

    if raw_dir.parts[-len(parts) :] == tuple(parts) and fits(raw_dir):
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


def locate(
    raw_dir: Path, pattern: str, archive_name: str, members: list[str] | None = None, marker: str | None = None
) -> Path:
    """An extracted tree ending in ``pattern`` (holding ``marker``), extracting ``archive_name`` if needed."""
    found = find_dir(raw_dir, pattern, marker=marker)
    if found:
        return found
    if not (raw_dir / archive_name).is_file() and not (raw_dir / "extracted" / archive_name).exists():
        raise DataError(
            f"{raw_dir}: neither an extracted '{pattern}' folder nor the archive {archive_name} "
            f"(run `emanet download` first)"
        )
    found = find_dir(extracted(raw_dir, archive_name, members), pattern, marker=marker)
    if not found:
        raise DataError(f"{raw_dir / archive_name}: has no '{pattern}' folder" + (f" with {marker}" if marker else ""))
    return found


def stems(folder: Path, suffix: str) -> set[str]:
    return {p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}")} if folder.is_dir() else set()
