"""Downloads (file:// and a real loopback HTTP server with Range), checksums, pins and safe extraction."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from emanet.data.archives.transfer import ChecksumError, FetchError, RemoteFile, fetch_file, safe_extract
from tests.helpers.http_server import FolderServer

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # several read chunks


def _entry(name="archive.tar", **sums) -> RemoteFile:
    return RemoteFile(
        name,
        ("http://127.0.0.1:9/unreachable/" + name,),
        sums or {"sha256": hashlib.sha256(PAYLOAD).hexdigest(), "md5": hashlib.md5(PAYLOAD).hexdigest()},
    )


@pytest.fixture
def served(tmp_path) -> Path:
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "archive.tar").write_bytes(PAYLOAD)
    return folder


def test_file_url_mirror_downloads_and_verifies(tmp_path, served):
    path = fetch_file(_entry(), tmp_path / "raw", [served.as_uri()], progress=False)
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "raw" / "archive.tar.part").exists()
    assert fetch_file(_entry(), tmp_path / "raw", [], progress=False) == path, "verified copy is reused"


def test_http_download_resumes_with_a_range_request(tmp_path, served):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "archive.tar.part").write_bytes(PAYLOAD[:1_000_000])  # an interrupted earlier attempt
    with FolderServer(served) as server:
        path = fetch_file(_entry(), raw, [server.url], progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.log == [{"path": "/archive.tar", "range": "bytes=1000000-"}]


def test_resume_of_a_complete_part_file_gets_416_and_finishes(tmp_path, served):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "archive.tar.part").write_bytes(PAYLOAD)
    with FolderServer(served) as server:
        assert fetch_file(_entry(), raw, [server.url], progress=False).read_bytes() == PAYLOAD


def test_mirrors_are_tried_in_order(tmp_path, served):
    empty = tmp_path / "empty"
    empty.mkdir()
    with FolderServer(empty) as dead, FolderServer(served) as good:
        path = fetch_file(_entry(), tmp_path / "raw", [dead.url, good.url], progress=False)
    assert path.read_bytes() == PAYLOAD and dead.log and good.log


def test_checksum_mismatch_names_file_and_digests_and_keeps_verified_files(tmp_path, served):
    raw = tmp_path / "raw"
    fetch_file(_entry(), raw, [served.as_uri()], progress=False)
    wrong = _entry("archive.tar", sha256="0" * 64)
    (raw / "archive.tar").rename(raw / "kept.tar")
    with pytest.raises(FetchError) as err:
        fetch_file(wrong, raw, [served.as_uri()], progress=False)
    message = str(err.value)
    assert "archive.tar" in message and "0" * 64 in message and hashlib.sha256(PAYLOAD).hexdigest() in message
    assert not (raw / "archive.tar.part").exists() and not (raw / "archive.tar").exists()
    assert (raw / "kept.tar").read_bytes() == PAYLOAD, "nothing already verified is deleted"


def test_a_verified_file_that_changed_is_reported_not_deleted(tmp_path, served):
    raw = tmp_path / "raw"
    path = fetch_file(_entry(), raw, [served.as_uri()], progress=False)
    path.write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="archive.tar: sha256 mismatch"):
        fetch_file(_entry(), raw, [served.as_uri()], progress=False)
    assert path.read_bytes() == b"tampered"


def test_files_without_published_checksum_are_pinned_on_first_download(tmp_path, served):
    raw = tmp_path / "raw"
    bare = RemoteFile("archive.tar", ())
    fetch_file(bare, raw, [served.as_uri()], progress=False)
    pins = json.loads((raw / "pinned-checksums.json").read_text())
    assert pins["archive.tar"] == {"sha256": hashlib.sha256(PAYLOAD).hexdigest(), "size": len(PAYLOAD)}
    (raw / "archive.tar").write_bytes(PAYLOAD[:-1])
    with pytest.raises(ChecksumError, match="size mismatch"):
        fetch_file(bare, raw, [], progress=False)


def test_all_sources_failing_lists_each(tmp_path):
    with pytest.raises(FetchError, match=r"no source gave a verified copy:\n.*nowhere.*\n.*unreachable"):
        fetch_file(_entry(), tmp_path / "raw", [(tmp_path / "nowhere").as_uri()], progress=False, timeout=2)


# --- extraction ---------------------------------------------------------------------------------------


def _tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None, mode="w") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def test_tar_extraction_is_complete_and_atomic(tmp_path):
    archive = _tar(tmp_path / "ok.tar.gz", {"top/a.txt": b"a", "top/sub/b.txt": b"b"}, mode="w:gz")
    out = safe_extract(archive, tmp_path / "out")
    assert (out / "top/sub/b.txt").read_bytes() == b"b"
    with pytest.raises(FetchError, match="already exists"):
        safe_extract(archive, tmp_path / "out")


def test_member_selection(tmp_path):
    archive = _tar(tmp_path / "ok.tar", {"keep/a.txt": b"a", "skip/b.txt": b"b", "keeper.txt": b"c"})
    out = safe_extract(archive, tmp_path / "out", members=["keep"])
    assert (out / "keep/a.txt").exists() and not (out / "skip").exists() and not (out / "keeper.txt").exists()


@pytest.mark.parametrize(
    "members, links",
    [
        ({"../evil.txt": b"x"}, None),
        ({"/abs/evil.txt": b"x"}, None),
        ({"ok.txt": b"x"}, {"escape": "../../outside"}),
    ],
)
def test_unsafe_tar_members_are_refused(tmp_path, members, links):
    archive = _tar(tmp_path / "bad.tar", members, links)
    with pytest.raises(FetchError, match="bad.tar: refused unsafe member"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.tar"], "no temporary folder is left behind"


@pytest.mark.parametrize("name", ["../evil.txt", "/abs.txt", "C:/win.txt"])
def test_unsafe_zip_members_are_refused(tmp_path, name):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(name, b"x")
    with pytest.raises(FetchError, match="refused unsafe member"):
        safe_extract(archive, tmp_path / "out")


def test_zip_symlinks_are_refused(tmp_path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("link")
    info.external_attr = 0o120777 << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "../../etc/passwd")
    with pytest.raises(FetchError, match="symbolic link"):
        safe_extract(archive, tmp_path / "out")


@pytest.mark.parametrize("suffix, mode", [(".tar", "w"), (".tar.gz", "w:gz")])
def test_truncated_archives_are_clear_errors(tmp_path, suffix, mode):
    archive = _tar(tmp_path / f"full{suffix}", {f"f{i}.bin": os.urandom(20000) for i in range(5)}, mode=mode)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(FetchError, match=f"cut{suffix}: truncated or corrupt archive"):
        safe_extract(cut, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_zip_is_a_clear_error(tmp_path):
    archive = tmp_path / "full.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.bin", os.urandom(50000))
    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive.read_bytes()[:-30])
    with pytest.raises(FetchError, match="cut.zip: truncated or corrupt archive"):
        safe_extract(cut, tmp_path / "out")
