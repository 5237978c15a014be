"""`emanet download imagenet-*`: the zipped PyTorch-Encoding checkpoint, served over HTTP, into a model."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from emanet.config import load_params, resolve
from emanet.data.archives.catalog import WEIGHTS
from emanet.data.archives.download import fetch_named
from emanet.data.archives.transfer import ChecksumError
from emanet.models import build_model
from tests.helpers.checkpoints import encoding_checkpoint
from tests.helpers.http_server import FolderServer


@pytest.fixture
def zoo(tmp_path) -> tuple[Path, Path, dict]:
    """A served folder holding a fabricated resnet50 zip under the model zoo's name, and its manifest."""
    entry = WEIGHTS["imagenet-resnet50"]
    served = tmp_path / "zoo"
    served.mkdir()
    state = encoding_checkpoint()
    pth = tmp_path / entry.member
    torch.save(state, pth)
    with zipfile.ZipFile(served / entry.download.name, "w") as zf:
        zf.write(pth, entry.member)
    files = [
        {"name": p.name, "size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in (served / entry.download.name, pth)
    ]
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"files": files}))
    return served, manifest, state


def test_cli_downloads_unzips_verifies_and_the_model_loads_it(tmp_path, zoo, root):
    served, manifest, state = zoo
    raw = tmp_path / "weights"
    with FolderServer(served) as server:
        proc = subprocess.run(
            [
                str(Path(sys.executable).parent / "emanet"),
                "download",
                "imagenet-resnet50",
                "--raw-dir",
                str(raw),
                "--mirror",
                server.url,
                "--manifest",
                str(manifest),
                "--quiet",
            ],
            capture_output=True,
            text=True,
        )
    assert proc.returncode == 0, proc.stderr
    checkpoint = Path(proc.stdout.strip())
    assert checkpoint == raw / "resnet50-25c4b509.pth"
    assert not list(raw.glob(".*unpacked")), "the temporary extraction folder is removed"

    cfg = resolve(
        load_params(root / "params.yaml"), "paper", ["model.backbone=resnet50", f"model.pretrained={checkpoint}"]
    )
    model = build_model(cfg.model, num_classes=21)
    assert torch.equal(model.backbone.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_member_is_checked_against_the_model_zoo_sha1(tmp_path, zoo):
    served, manifest, _ = zoo
    files = [f for f in json.loads(manifest.read_text())["files"] if f["name"].endswith(".zip")]
    manifest.write_text(json.dumps({"files": files}))  # pin the zip only: the .pth must match the zoo
    with pytest.raises(ChecksumError, match=r"resnet50-25c4b509\.pth: sha1 mismatch: expected 25c4b50959ef"):
        fetch_named("imagenet-resnet50", tmp_path / "weights", [served.as_uri()], manifest, progress=False)
    assert not (tmp_path / "weights" / "resnet50-25c4b509.pth").exists()


def test_catalog_names_every_checkpoint_by_its_digest():
    for name, entry in WEIGHTS.items():
        digests = entry.member_checksums or entry.download.checksums
        if not digests:  # no published digest (the released EMANet model): fetched by hand, pinned on sight
            assert entry.download.access and not entry.download.urls, name
            continue
        digest = next(iter(digests.values()))
        assert digest[:8] in entry.checkpoint_name, name
        assert all(url.startswith("https://") for url in entry.download.urls)
