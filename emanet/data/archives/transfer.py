"""Resumable, checksummed downloads and safe archive extraction.

* :func:`download` tries the mirrors first, then the catalog's URLs; it resumes a ``.part`` file with an
  HTTP ``Range`` request (or a seek, for ``file://``), reports progress (:mod:`emanet.progress`: a bar on
  a terminal, plain lines in a log), and only renames the file
  into place once every known checksum matches. A mismatch removes only the unverified ``.part`` file and
  says which file, which algorithm, the expected and the actual digest.
* :func:`safe_extract` refuses absolute paths, ``..`` and links that leave the target (tarfile's ``data``
  filter, and the same rules checked by hand for zip), reports truncated or corrupt archives clearly,
  and extracts into a temporary folder renamed into place when complete. A tar archive is read once,
  as a stream (checked and extracted member by member), with progress over the archive's bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from emanet.io import atomic_write_json
from emanet.progress import progress as progress_report

log = logging.getLogger(__name__)

CHUNK = 1 << 20
ALGORITHMS = ("md5", "sha1", "sha256")
QUIET_FOR_S = 2.0  # hashing or extraction that ends sooner reports nothing


class FetchError(RuntimeError):
    """A download or extraction that failed; the message names the file and the reason."""


class ChecksumError(FetchError):
    """A file whose digest differs from the expected one."""

    def __init__(self, path: Path, algorithm: str, expected: str, actual: str):
        self.path, self.algorithm, self.expected, self.actual = path, algorithm, expected, actual
        super().__init__(f"{path}: {algorithm} mismatch: expected {expected}, got {actual}")


@dataclass(frozen=True)
class RemoteFile:
    """One file of the catalog: where it lives and how to recognise it.

    ``checksums`` maps an algorithm (md5, sha1, sha256) to its hex digest; a digest shorter than the
    algorithm's full length is a prefix, as torchvision pins its weight files (8 hex digits of SHA-256).
    ``size`` in bytes, when known, is checked too. ``access`` says how to obtain a file that needs a
    login (the VOC test images): the error shows it when no source gave a copy.
    """

    name: str
    urls: tuple[str, ...]
    checksums: Mapping[str, str] = field(default_factory=dict)
    size: int | None = None
    access: str | None = None

    def with_checksums(self, checksums: Mapping[str, str], size: int | None) -> RemoteFile:
        return dataclasses.replace(self, checksums=dict(checksums), size=size)


def file_digests(path: Path, algorithms: Iterable[str] = ALGORITHMS, progress: bool = False) -> dict[str, str]:
    """Hex digests of ``path`` for each algorithm, in one pass over the file; ``progress`` reports the
    bytes hashed when that takes more than a couple of seconds (a multi-GB archive)."""
    hashers = {alg: hashlib.new(alg) for alg in algorithms}
    with (
        open(path, "rb") as handle,
        progress_report(
            total=os.fstat(handle.fileno()).st_size,
            desc=f"{'+'.join(hashers)} {Path(path).name}",
            unit="B",
            unit_scale=True,
            enabled=progress,
            delay_s=QUIET_FOR_S,
        ) as bar,
    ):
        while chunk := handle.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
            bar.update(len(chunk))
    return {alg: h.hexdigest() for alg, h in hashers.items()}


def verify(path: Path, checksums: Mapping[str, str], size: int | None = None, progress: bool = False) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the given size and every given digest
    (``progress``: see :func:`file_digests`)."""
    if size is not None and path.stat().st_size != size:
        raise ChecksumError(path, "size", str(size), str(path.stat().st_size))
    if not checksums:
        return
    unknown = set(checksums) - set(ALGORITHMS)
    if unknown:
        raise FetchError(f"{path}: unsupported checksum algorithm(s) {sorted(unknown)}")
    actual = file_digests(path, checksums, progress)
    for alg, expected in checksums.items():
        if not actual[alg].startswith(expected.lower()):
            raise ChecksumError(path, alg, expected.lower(), actual[alg])


def mirror_urls(name: str, mirrors: Iterable[str]) -> list[str]:
    """``<mirror>/<name>`` for each mirror base URL (a folder holding the archives under their names)."""
    return [m.rstrip("/") + "/" + urllib.parse.quote(name) for m in mirrors]


def fetch_file(
    entry: RemoteFile, dest_dir: str | Path, mirrors: Iterable[str] = (), progress: bool = True, timeout: float = 60.0
) -> Path:
    """Fetch ``entry`` into ``dest_dir`` (resuming a previous partial download) and verify it.

    A file already in place is verified and kept; if it no longer verifies it is *not* deleted (it was
    verified once, so something changed it) and the error says so. A file without a published checksum
    is pinned on first download (SHA-256 and size in ``pinned-checksums.json`` beside it,
    docs/datasets.md#checksums-and-pinning) and verified against that pin from then on.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    pins = _read_pins(dest_dir)
    entry = _with_pin(entry, pins)
    target = dest_dir / entry.name
    if target.exists():
        verify(target, entry.checksums, entry.size, progress)
        if not entry.checksums:  # placed by hand (a file behind a login): pinned from now on
            _pin(dest_dir, pins, target, entry.name)
        log.info("%s: already downloaded and verified", target)
        return target
    part = dest_dir / (entry.name + ".part")
    errors: list[str] = []
    for url in [*mirror_urls(entry.name, mirrors), *entry.urls]:
        try:
            _fetch_url(url, part, entry.size, progress, timeout)
            verify(part, entry.checksums, entry.size, progress)
        except ChecksumError as exc:
            part.unlink(missing_ok=True)
            errors.append(f"{url}: {exc}")
            log.warning("%s", errors[-1])
            continue
        except (urllib.error.URLError, OSError, FetchError) as exc:
            errors.append(f"{url}: {exc}")
            log.warning("%s: download failed (%s); trying the next source", url, exc)
            continue
        if not entry.checksums:
            _pin(dest_dir, pins, part, entry.name)
        os.replace(part, target)
        return target
    hint = f"\n{entry.name}: {entry.access}" if entry.access else ""
    raise FetchError(f"{entry.name}: no source gave a verified copy:\n  " + "\n  ".join(errors) + hint)


PINS_FILE = "pinned-checksums.json"


def _read_pins(dest_dir: Path) -> dict:
    """name -> {"sha256", "size"} pinned on first download, from ``dest_dir/pinned-checksums.json`` ({} if
    absent). Raises FetchError naming the file when it is not UTF-8 JSON of that shape."""
    path = dest_dir / PINS_FILE
    if not path.exists():
        return {}
    fix = (
        "restore it from a backup; deleting it makes the next download pin whatever it receives, "
        "trusted on first use again"
    )
    from emanet.textfile import read_text_file

    try:
        pins = json.loads(read_text_file(path, FetchError))
    except json.JSONDecodeError as exc:
        raise FetchError(f"{path}: not valid JSON ({exc}); {fix}") from None
    if not isinstance(pins, dict) or not all(
        isinstance(pin, dict)
        and isinstance(pin.get("sha256"), str)
        and len(pin["sha256"]) == 64
        and isinstance(pin.get("size"), int)
        and not isinstance(pin["size"], bool)
        and pin["size"] >= 0
        for pin in pins.values()
    ):
        raise FetchError(f'{path}: must map file names to {{"sha256": <64 hex digits>, "size": <bytes>}}; {fix}')
    return pins


def _with_pin(entry: RemoteFile, pins: dict) -> RemoteFile:
    pin = pins.get(entry.name)
    if entry.checksums or not pin:
        return entry
    return entry.with_checksums({"sha256": pin["sha256"]}, pin["size"])


def _pin(dest_dir: Path, pins: dict, part: Path, name: str) -> None:
    sha256 = file_digests(part, ["sha256"])["sha256"]
    pins[name] = {"sha256": sha256, "size": part.stat().st_size}
    atomic_write_json(dest_dir / PINS_FILE, pins)
    log.warning(
        "%s: no published checksum; pinned sha256 %s on first download (%s)", name, sha256, dest_dir / PINS_FILE
    )


def _fetch_url(url: str, part: Path, size: int | None, progress: bool, timeout: float) -> None:
    """Append the rest of ``url`` to ``part``, starting where a previous attempt stopped."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset == size:
        return
    if url.startswith("file://"):
        _fetch_local(Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path)), part, offset, progress)
        return
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # range not satisfiable: the partial file is already complete
            return
        raise
    with response:
        if offset and response.status != 206:
            log.info("%s: server ignored the range request; restarting from zero", url)
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as out:
            _copy(response, out, offset, total, part.name.removesuffix(".part"), progress)


def _fetch_local(source: Path, part: Path, offset: int, progress: bool) -> None:
    if not source.is_file():
        raise FetchError(f"{source}: no such file")
    total = source.stat().st_size
    if offset > total:
        offset = 0
    with open(source, "rb") as src, open(part, "ab" if offset else "wb") as out:
        src.seek(offset)
        _copy(src, out, offset, total, part.name.removesuffix(".part"), progress)


def _copy(src, out, offset: int, total: int | None, label: str, progress: bool) -> None:
    with progress_report(
        total=total, initial=offset, unit="B", unit_scale=True, desc=f"download {label}", enabled=progress
    ) as bar:
        while chunk := src.read(CHUNK):
            out.write(chunk)
            bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())


def safe_extract(
    archive: str | Path, dest: str | Path, members: Iterable[str] | None = None, progress: bool = True
) -> Path:
    """Extract a tar (any compression) or zip archive into ``dest``, atomically and safely.

    ``dest`` must not exist yet; the archive is unpacked into a temporary sibling folder, which is
    renamed to ``dest`` only when extraction finished. ``members`` limits extraction to those paths
    (and everything below them). ``progress`` reports the archive's bytes read (tar) or its members
    extracted (zip) when extraction takes more than a couple of seconds.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise FetchError(f"{dest}: already exists; remove it to extract {archive.name} again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    wanted = tuple(m.rstrip("/") for m in members) if members else None
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, tmp, wanted, progress)
        else:
            _extract_tar(archive, tmp, wanted, progress)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _selected(name: str, wanted: tuple[str, ...] | None) -> bool:
    name = name.rstrip("/")
    return wanted is None or any(name == w or name.startswith(w + "/") for w in wanted)


class _CountingReader:
    """A binary file whose reads advance a progress report (tarfile's stream mode only reads)."""

    def __init__(self, handle, bar):
        self.handle, self.bar = handle, bar

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.bar.update(len(data))
        return data


def _extract_tar(archive: Path, dest: Path, wanted: tuple[str, ...] | None, progress: bool) -> None:
    """One pass over the archive as a stream (``r|*``): each member's name is checked, then the member is
    extracted through tarfile's ``data`` filter. A refusal midway leaves a partial tree in ``dest``, the
    temporary folder :func:`safe_extract` removes. Hard links resolve against members already extracted
    (in a stream the target always precedes the link). Folders keep this process's default permissions
    (a read-only folder in the archive would refuse its own files, which follow it in a stream)."""
    try:
        with (
            open(archive, "rb") as raw,
            progress_report(
                total=os.fstat(raw.fileno()).st_size,
                desc=f"extract {archive.name}",
                unit="B",
                unit_scale=True,
                enabled=progress,
                delay_s=QUIET_FOR_S,
            ) as bar,
            tarfile.open(fileobj=_CountingReader(raw, bar), mode="r|*") as tar,
        ):
            for member in tar:
                _check_member_name(archive, member.name)
                if _selected(member.name, wanted):
                    tar.extract(member, dest, set_attrs=not member.isdir(), filter="data")
    except tarfile.FilterError as exc:
        raise FetchError(f"{archive}: refused unsafe member: {exc}") from exc
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise FetchError(f"{archive}: truncated or corrupt archive ({type(exc).__name__}: {exc})") from exc


def _extract_zip(archive: Path, dest: Path, wanted: tuple[str, ...] | None, progress: bool) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _check_zip_member(archive, info)
            chosen = [i for i in zf.infolist() if _selected(i.filename, wanted)]
            for info in progress_report(
                chosen, desc=f"extract {archive.name}", unit="files", enabled=progress, delay_s=QUIET_FOR_S
            ):
                zf.extract(info, dest)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise FetchError(f"{archive}: truncated or corrupt archive ({type(exc).__name__}: {exc})") from exc


def _check_member_name(archive: Path, name: str) -> None:
    """Refuse absolute paths, drive letters and '..' components (tarfile's filter only strips some)."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise FetchError(f"{archive}: refused unsafe member {name!r} (absolute or '..' path)")


def _check_zip_member(archive: Path, info: zipfile.ZipInfo) -> None:
    _check_member_name(archive, info.filename)
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        raise FetchError(f"{archive}: refused symbolic link member {info.filename!r}")
