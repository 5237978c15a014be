"""Evaluation protocols and scores, without training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emanet.engine.evaluate import predict
from emanet.engine.metrics import confusion_matrix, scores
from emanet.models import build_model


def _flip_equivariant(model: torch.nn.Module) -> torch.nn.Module:
    """Make every conv kernel left-right symmetric: the network then commutes with horizontal flips
    on inputs whose width is 8k+1 (every strided stage then samples a symmetric grid)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)
    return model.eval()


def test_ms_flip_on_a_flip_equivariant_model_equals_single_scale(tiny_config):
    image = torch.randn(3, 65, 81)
    plain = build_model(tiny_config.model, num_classes=21).eval()
    with torch.no_grad():
        assert not torch.allclose(plain(image.flip(-1)[None]).flip(-1), plain(image[None]), atol=1e-3)
    model = _flip_equivariant(plain)
    with torch.no_grad():
        logits = model(image[None])
        torch.testing.assert_close(model(image.flip(-1)[None]).flip(-1), logits, atol=1e-4, rtol=1e-4)
    single = predict(model, image, None, False)
    both = predict(model, image, [1.0], True)
    assert torch.equal(single, logits[0].argmax(0))  # 65 x 81 is already 8k+1: no padding, the same forward
    # Flipped and plain logits agree within eps (asserted above; measured ~1e-7, the float32 rounding of a
    # mirrored convolution). Where the best class leads the runner-up by more than 2 eps, both averaged
    # softmaxes rank it first, so MS+flip must pick it; the other pixels are near-ties whose label is
    # rounding luck (0.2-3.4 % of the pixels over 5 seeds; a missing flip-back changes 30-632 decided ones).
    eps = 1e-4 + 1e-4 * logits.abs().max().item()
    best, runner_up = logits[0].topk(2, dim=0).values
    decided = best - runner_up > 2 * eps
    assert decided.float().mean() > 0.9, "too few decided pixels for the comparison to mean anything"
    assert torch.equal(single[decided], both[decided])


def test_multi_scale_prediction_has_the_image_size(tiny_config):
    model = build_model(tiny_config.model, num_classes=5).eval()
    image = torch.randn(3, 50, 70)
    for scales, flip in (([0.5, 1.0, 1.5], True), ([0.75], False), (None, False)):
        assert predict(model, image, scales, flip).shape == (50, 70)


def test_confusion_matrix_and_scores():
    target = torch.tensor([0, 0, 1, 1, 2, 255])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    matrix = confusion_matrix(pred, target, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    result = scores(matrix.numpy(), ["a", "b", "c"])
    assert result["per_class"] == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 0.0})
    assert result["miou"] == pytest.approx(1 / 3)
    assert result["pixel_acc"] == pytest.approx(3 / 5)
    assert result["mean_acc"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert result["fwiou"] == pytest.approx(2 / 5 * 1 / 3 + 2 / 5 * 2 / 3)


def test_classes_absent_from_prediction_and_truth_are_not_averaged():
    matrix = np.array([[5, 0, 0], [0, 5, 0], [0, 0, 0]])
    result = scores(matrix, ["a", "b", "never"])
    assert result["miou"] == 1.0 and result["per_class"]["never"] is None


@pytest.mark.parametrize("head", ["ema", "aspp"])
def test_a_model_trained_at_os16_is_evaluated_at_os8_with_the_same_weights(tmp_path, tiny_config, head):
    """Fig. 4's protocol (train at OS 16, test at OS 8): the weights load unchanged into the denser network,
    whose features (and ASPP rates) follow the evaluation stride."""
    import dataclasses

    from emanet.engine.evaluate import load_trained

    trained = dataclasses.replace(
        tiny_config, model=dataclasses.replace(tiny_config.model, output_stride=16, head=head)
    )
    model = build_model(trained.model, num_classes=21)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    cfg = dataclasses.replace(trained, eval=dataclasses.replace(trained.eval, output_stride=8))
    dense = load_trained(cfg, tmp_path, 21, torch.device("cpu"))
    for key, value in model.state_dict().items():
        assert torch.equal(dense.state_dict()[key], value), key
    image = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        assert dense.backbone(image).shape[-1] == 9 and model.eval().backbone(image).shape[-1] == 5
    as_trained = load_trained(trained, tmp_path, 21, torch.device("cpu"))
    assert as_trained.backbone.output_stride == 16
