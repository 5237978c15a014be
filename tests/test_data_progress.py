"""Long data stages leave readable progress in log files: plain lines, no carriage returns."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import zipfile

from emanet.data.archives import transfer as fetching
from emanet.data.archives.transfer import RemoteFile, fetch_file, safe_extract


def test_download_and_prepare_commands_log_plain_lines(tmp_path, synth_dir):
    """What a Snakemake or DVC log of `emanet download` / `emanet prepare` shows (stderr not a terminal)."""
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    manifest = str(synth_dir / "manifest.json")
    run = [sys.executable, "-m", "emanet.cli"]
    fetched = subprocess.run(
        [*run, "download", "voc", "--raw-dir", str(raw), "--mirror", synth_dir.as_uri(), "--manifest", manifest],
        capture_output=True,
        text=True,
        check=True,
    )
    prepared = subprocess.run(
        [*run, "prepare", "voc", "--raw-dir", str(raw), "--out", str(out), "--manifest", manifest, "--workers", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    logs = fetched.stderr + prepared.stderr
    assert "\r" not in logs and "CUDA_HOME" not in logs
    lines = logs.splitlines()
    assert any(line.startswith("download VOCtrainval_11-May-2012.tar: ") and "(100.0%)" in line for line in lines)
    assert any(line.startswith("download benchmark.tgz: ") and "(100.0%)" in line for line in lines)
    assert any(
        line.startswith("prepare voc: ") and " images (100.0%), " in line and "elapsed" in line for line in lines
    ), logs
    quiet = subprocess.run(
        [*run, "download", "voc", "--raw-dir", str(raw), "--manifest", manifest, "--quiet"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "download " not in quiet.stderr  # already there and verified: no copy, and --quiet hides hashing


def _tar(path, members: dict[str, bytes], mode: str = "w") -> None:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_hashing_and_extraction_report_progress(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fetching, "QUIET_FOR_S", 0.0)  # these files take milliseconds: report them anyway
    archive = tmp_path / "a.tgz"
    _tar(archive, {"top/x.bin": b"x" * 300_000, "top/sub/y.bin": b"y" * 10, "other/z.bin": b"z"}, "w:gz")
    entry = RemoteFile("a.tgz", (archive.as_uri(),))
    got = fetch_file(entry, tmp_path / "raw", progress=True)
    fetch_file(entry, tmp_path / "raw", progress=True)  # pinned on first use: verified (hashed) the second time
    safe_extract(got, tmp_path / "out", members=["top"])
    archive_zip = tmp_path / "b.zip"
    with zipfile.ZipFile(archive_zip, "w") as zf:
        zf.writestr("a/one.txt", "1")
        zf.writestr("a/two.txt", "2")
    safe_extract(archive_zip, tmp_path / "out_zip")
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert any(line.startswith("download a.tgz: ") and "(100.0%)" in line for line in lines), err
    assert any(line.startswith("sha256 a.tgz: ") and "(100.0%)" in line for line in lines), err
    assert any(line.startswith("extract a.tgz: ") and "(100.0%)" in line for line in lines), err
    assert any(line.startswith("extract b.zip: 2/2 files (100.0%)") for line in lines), err
    assert (tmp_path / "out/top/x.bin").read_bytes() == b"x" * 300_000
    assert (tmp_path / "out/top/sub/y.bin").is_file() and not (tmp_path / "out/other").exists()
    assert (tmp_path / "out_zip/a/two.txt").read_text() == "2"
