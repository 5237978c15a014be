"""The dilated backbone: the official dilation rule, output strides, and torchvision equivalence."""

from __future__ import annotations

import pytest
import torch
import torchvision

from emanet.models.resnet import DilatedResNet, block_dilations
from tests.helpers.models import model_config


@pytest.mark.parametrize(
    "output_stride, layer3, layer4",
    [
        (8, [1] + [2] * 22, [2, 8, 16]),  # docs/reproducing.md#backbone: (2, 8, 16), not (4, 8, 16)
        (16, [1] * 23, [1, 4, 8]),
    ],
)
def test_resnet101_dilations_follow_the_official_rule(output_stride, layer3, layer4):
    with torch.device("meta"):
        net = DilatedResNet.from_config(model_config(backbone="resnet101", output_stride=output_stride))
    d = net.dilations()
    assert d["layer3"] == layer3 and d["layer4"] == layer4
    assert d["layer1"] == [1] * 3 and d["layer2"] == [1] * 4


def test_without_multi_grid_later_blocks_use_the_stage_dilation():
    assert block_dilations(3, 4, None) == [2, 4, 4]
    assert block_dilations(3, 2, (1, 2, 4)) == [1, 4, 8]


@pytest.mark.parametrize("output_stride", [8, 16])
def test_feature_map_size_matches_output_stride(output_stride):
    net = DilatedResNet.from_config(
        model_config(backbone="resnet_tiny", output_stride=output_stride, stem="torchvision", base_width=8)
    ).eval()
    out = net(torch.randn(1, 3, 129, 129))
    assert out.shape == (1, 8 * 8 * 4, 128 // output_stride + 1, 128 // output_stride + 1)


def test_deep_stem_layout_and_parameter_count():
    with torch.device("meta"):
        net = DilatedResNet.from_config(model_config(backbone="resnet101", output_stride=8))
    assert [m.out_channels for m in net.conv1 if isinstance(m, torch.nn.Conv2d)] == [64, 64, 128]
    assert net.layer1[0].conv1.in_channels == 128
    assert net.layer2[0].conv2.stride == (2, 2) and net.layer2[0].conv1.stride == (1, 1), "stride on the 3x3"
    assert sum(p.numel() for p in net.parameters()) == 42_623_936  # docs/reproducing.md#backbone: 42.62M


def test_torchvision_stem_at_stride_32_equals_torchvision_resnet50():
    ours = DilatedResNet.from_config(
        model_config(backbone="resnet50", output_stride=32, multi_grid=None, stem="torchvision")
    ).eval()
    ref = torchvision.models.resnet50(weights=None).eval()
    ours.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 96, 96)
    trunk = torch.nn.Sequential(*list(ref.children())[:-2])
    torch.testing.assert_close(ours(x), trunk(x))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backbone": "resnet18"}, "unknown backbone"),
        ({"output_stride": 4}, "output_stride"),
        ({"stem": "v1c"}, "stem"),
        ({"base_width": 32}, "deep stem"),
    ],
)
def test_bad_backbone_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DilatedResNet.from_config(model_config(**kwargs))
