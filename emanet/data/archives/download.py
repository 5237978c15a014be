"""``emanet download NAME``: fetch every file a dataset or an ImageNet checkpoint needs, verified.

A manifest (``{"files": [{"name", "size", "sha256"}, ...]}``, as ``emanet synth`` writes one) replaces the
catalog's checksums for the files it names: that is how private copies and the tiny profile's synthetic
archives are verified through exactly the code path of the real downloads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from emanet.data.archives.catalog import DATASETS, WEIGHTS, WeightsEntry
from emanet.data.archives.transfer import FetchError, RemoteFile, fetch_file, safe_extract, verify
from emanet.textfile import read_text_file


def names() -> list[str]:
    """Everything ``emanet download`` knows: datasets first, then checkpoints."""
    return [*DATASETS, *WEIGHTS]


def read_manifest(path: str | Path) -> dict[str, dict]:
    """name -> {"sha256", "size"} from a manifest file (``{"files": [{"name", "size", "sha256"}, ...]}``).

    Raises FetchError naming the file when it is missing, not UTF-8 JSON, or an entry lacks a non-empty
    name, a size in bytes (an integer >= 0) or a SHA-256 of 64 hex digits."""
    path = Path(path)
    try:
        data = json.loads(read_text_file(path, FetchError))
    except FileNotFoundError:
        raise FetchError(f"{path}: manifest not found") from None
    except json.JSONDecodeError as exc:
        raise FetchError(f"{path}: not valid JSON ({exc}); regenerate it (`emanet synth` writes one)") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        raise FetchError(
            f"{path}: not a manifest: expected a JSON object with a 'files' list of name, size and "
            f"sha256; regenerate it (`emanet synth` writes one)"
        )
    pins = {}
    for number, entry in enumerate(files):
        fields = entry if isinstance(entry, dict) else {}
        name, size, sha256 = fields.get("name"), fields.get("size"), fields.get("sha256")
        if not (
            isinstance(name, str)
            and name
            and isinstance(size, int)
            and not isinstance(size, bool)
            and size >= 0
            and isinstance(sha256, str)
            and re.fullmatch(r"[0-9a-fA-F]{64}", sha256)
        ):
            raise FetchError(
                f'{path}: files[{number}] must be {{"name": <file name>, "size": <bytes>, '
                f'"sha256": <64 hex digits>}}, got {json.dumps(entry)[:160]}'
            )
        pins[name] = {"sha256": sha256.lower(), "size": size}
    return pins


def _apply_manifest(entry: RemoteFile, manifest: dict[str, dict]) -> RemoteFile:
    pinned = manifest.get(entry.name)
    return entry.with_checksums({"sha256": pinned["sha256"]}, pinned["size"]) if pinned else entry


def fetch_named(
    name: str,
    raw_dir: str | Path,
    mirrors: Iterable[str] = (),
    manifest: str | Path | None = None,
    progress: bool = True,
) -> list[Path]:
    """Download (or verify what is already there) every file the download ``name`` needs into ``raw_dir``.

    ``name`` is a dataset of :data:`~emanet.data.archives.catalog.DATASETS` (all its archives, one
    :func:`~emanet.data.archives.transfer.fetch_file` each) or a checkpoint of
    :data:`~emanet.data.archives.catalog.WEIGHTS` (:func:`fetch_weights`); ``manifest`` replaces the
    catalog's checksums for the files it names. Returns the verified files' paths. Raises FetchError for
    an unknown name, a bad manifest, or a file no source gave a verified copy of."""
    if name not in DATASETS and name not in WEIGHTS:
        raise FetchError(f"unknown download {name!r}; choose one of {names()}")
    pins = read_manifest(manifest) if manifest else {}
    mirrors = list(mirrors)
    if name in WEIGHTS:
        return [fetch_weights(WEIGHTS[name], raw_dir, mirrors, pins, progress)]
    return [fetch_file(_apply_manifest(e, pins), raw_dir, mirrors, progress) for e in DATASETS[name]]


def write_receipt(path: Path, paths: list[Path]) -> Path:
    """A small file naming what a download stage verified: the stage's output for the pipelines."""
    from emanet.io import atomic_write_json

    return atomic_write_json(path, {"files": [{"name": p.name, "size": p.stat().st_size} for p in paths]})


def fetch_weights(
    entry: WeightsEntry, dest_dir: str | Path, mirrors: list[str], pins: dict[str, dict], progress: bool = True
) -> Path:
    """Download a checkpoint; for a zipped one, extract its ``.pth`` and verify the member's digest."""
    dest_dir = Path(dest_dir)
    checkpoint = dest_dir / entry.checkpoint_name
    member_sums = entry.member_checksums or {}
    if entry.member and entry.member in pins:
        member_sums = {"sha256": pins[entry.member]["sha256"]}
    if entry.member and checkpoint.exists():
        verify(checkpoint, member_sums)
        return checkpoint
    archive = fetch_file(_apply_manifest(entry.download, pins), dest_dir, mirrors, progress)
    if not entry.member:
        return archive
    unpacked = dest_dir / f".{entry.member}.unpacked"
    shutil.rmtree(unpacked, ignore_errors=True)
    try:
        safe_extract(archive, unpacked, members=[entry.member], progress=progress)
        member = unpacked / entry.member
        if not member.is_file():
            raise FetchError(f"{archive}: has no member {entry.member!r}")
        verify(member, member_sums)
        os.replace(member, checkpoint)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)
    return checkpoint
