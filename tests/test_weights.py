"""ImageNet weight loading with fabricated checkpoints in each naming the project supports."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision

from emanet.models.resnet import DilatedResNet
from emanet.models.weights import WeightLoadError, load_backbone_weights
from tests.helpers.checkpoints import encoding_checkpoint as _encoding_checkpoint
from tests.helpers.models import model_config


def _resnet50(**changes) -> DilatedResNet:
    """ResNet-50 at output stride 8, otherwise params.yaml's backbone (paper profile), with ``changes``."""
    return DilatedResNet.from_config(model_config(backbone="resnet50", output_stride=8, **changes))


def test_deep_stem_checkpoint_in_pytorch_encoding_naming(tmp_path):
    sd = _encoding_checkpoint()
    path = tmp_path / "resnet50-ebb6acbb.pth"
    torch.save(sd, path)
    net = _resnet50()
    report = load_backbone_weights(net, path)
    assert report.ignored == ["fc.weight", "fc.bias"] and not report.missing and not report.unexpected
    assert torch.equal(net.conv1[6].weight, sd["conv1.6.weight"])
    assert torch.equal(net.layer4[2].bn3.running_var, sd["layer4.2.bn3.running_var"])


def test_torchvision_checkpoint_wrapped_by_dataparallel(tmp_path):
    sd = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    net = _resnet50(stem="torchvision")
    report = load_backbone_weights(net, path)
    assert not report.missing and len(report.ignored) == 2
    assert torch.equal(net.conv1.weight, sd["conv1.weight"])


def test_shape_mismatch_is_refused_naming_the_key(tmp_path):
    sd = _encoding_checkpoint()
    sd["layer3.1.conv2.weight"] = torch.randn(256, 256, 1, 1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(WeightLoadError, match=r"bad\.pth.*'layer3\.1\.conv2\.weight'.*\(256, 256, 1, 1\)"):
        load_backbone_weights(_resnet50(), tmp_path / "bad.pth")


def test_wrong_family_reports_missing_and_unexpected_keys(tmp_path):
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "tv.pth")
    with pytest.raises(
        WeightLoadError, match=r"missing: conv1\.0\.weight.*unexpected: conv1\.weight.*set model\.stem: torchvision"
    ):
        load_backbone_weights(_resnet50(stem="deep"), tmp_path / "tv.pth")


def test_non_strict_load_reports_instead_of_raising(tmp_path):
    sd = _encoding_checkpoint()
    del sd["layer4.2.conv3.weight"]
    torch.save(sd, tmp_path / "partial.pth")
    report = load_backbone_weights(_resnet50(), tmp_path / "partial.pth", strict=False)
    assert report.missing == ["layer4.2.conv3.weight"]


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(pickle.Pickler, protocol=2))  # a class object: weights_only must refuse it
    with pytest.raises(WeightLoadError, match="evil.pth"):
        load_backbone_weights(_resnet50(), path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(WeightLoadError, match="nowhere.pth: checkpoint file not found"):
        load_backbone_weights(_resnet50(), tmp_path / "nowhere.pth")
