"""The shared-view evaluation gives the straightforward per-image, per-protocol results, bit for bit on CPU."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from emanet.config import ConfigError, load_params, resolve
from emanet.data.loading.dataset import SegmentationDataset
from emanet.data.loading.eval_loader import eval_loader
from emanet.data.loading.transforms import EvalTransform
from emanet.engine.evaluate import evaluate, load_trained, predict
from emanet.engine.inference import SharedViewPredictor
from emanet.engine.reference_eval import reference_matrices, reference_predict
from emanet.models import build_model
from emanet.protocols import Protocol
from tests.conftest import ROOT

SCALES = [0.75, 1.0, 1.25]
#: every kind of protocol, T_eval values shared by one backbone pass, and the default T_eval (3) twice
PROTOCOLS = {
    "ss": Protocol(False, False, None),
    "ms_flip": Protocol(True, True, None),
    "ss_T1": Protocol(False, False, 1),
    "ss_T2": Protocol(False, False, 2),
    "ss_T3": Protocol(False, False, 3),
    "ms_flip_T2": Protocol(True, True, 2),
    "ms": Protocol(True, False, None),
    "ss_flip": Protocol(False, True, None),
}
#: odd sizes: padding to 8k+1 on both sides, scales that round, a portrait and a landscape image
SIZES = [(67, 93), (97, 65), (50, 71), (81, 81)]


def _model(cfg, head: str = "ema", **ema) -> torch.nn.Module:
    model_cfg = dataclasses.replace(cfg.model, head=head, ema=dataclasses.replace(cfg.model.ema, **ema))
    return build_model(model_cfg, num_classes=21).eval()


def _reference(model, image, protocol: Protocol) -> torch.Tensor:
    units = list(model.ema_units())
    built = [u.eval_stages for u in units]
    for unit in units:
        unit.eval_stages = protocol.stages if protocol.stages is not None else unit.eval_stages
    try:
        return reference_predict(model, image, SCALES if protocol.multi_scale else None, protocol.flip)
    finally:
        for unit, value in zip(units, built, strict=True):
            unit.eval_stages = value


@pytest.mark.parametrize("head", ["ema", "aspp"])
def test_every_protocol_together_equals_each_alone_and_the_reference(tiny_config, head):
    model = _model(tiny_config, head)
    protocols = list(PROTOCOLS.values())
    together = SharedViewPredictor(model, protocols, SCALES)
    for h, w in SIZES:
        image = torch.randn(3, h, w)
        preds = together(image)
        for protocol, pred in zip(protocols, preds, strict=True):
            alone = SharedViewPredictor(model, [protocol], SCALES)(image)[0]
            assert pred.shape == (h, w) and torch.equal(pred, alone), (protocol, h, w)
            assert torch.equal(pred, _reference(model, image, protocol)), (protocol, h, w)
    if head == "ema":  # the comparison means something: the protocols do predict differently
        image = torch.randn(3, *SIZES[0])
        ss, ms_flip, t1 = together(image)[:3]
        assert not torch.equal(ss, ms_flip) and not torch.equal(ss, t1)
    assert all(u.eval_stages is None for u in model.ema_units()), "T_eval restored"


def test_batched_views_equal_one_view_at_a_time_with_batch_invariant_kernels(tiny_config):
    """oneDNN picks kernels by batch shape (a batch of 2 rounds differently: see emanet.engine.inference),
    so CPU evaluation never batches; with oneDNN off every kernel is batch-invariant and the batched plan
    (what CUDA runs) must give exactly the unbatched results."""
    model = _model(tiny_config)
    protocols = list(PROTOCOLS.values())
    with torch.backends.mkldnn.flags(enabled=False):
        batched = SharedViewPredictor(model, protocols, SCALES, batch_views=True)
        for h, w in SIZES[:2]:
            image = torch.randn(3, h, w)
            for protocol, pred in zip(protocols, batched(image), strict=True):
                assert torch.equal(pred, _reference(model, image, protocol)), (protocol, h, w)


def _counting(model):
    calls = {"backbone": [], "fc0": 0, "head": 0}  # head: the part after fc0, from the EMA unit on

    def on_backbone(module, inputs, output):
        calls["backbone"].append(inputs[0].shape[0])

    def counter(key):
        def count(module, inputs, output):
            calls[key] += 1

        return count

    model.backbone.register_forward_hook(on_backbone)
    model.head.fc0.register_forward_hook(counter("fc0"))
    model.head.block.register_forward_hook(counter("head"))
    return calls


@pytest.mark.parametrize("batch_views", [False, True])
def test_forward_passes_are_shared(tiny_config, batch_views):
    image = torch.randn(3, 67, 93)
    model = _model(tiny_config)  # T_train = 3
    calls = _counting(model)
    fig4 = [Protocol(False, False, None)] + [Protocol(False, False, t) for t in range(1, 9)]
    SharedViewPredictor(model, fig4, SCALES, batch_views)(image)
    assert calls == {"backbone": [1], "fc0": 1, "head": 8}  # ss and ss_T3 are one computation
    calls.update(backbone=[], fc0=0, head=0)
    SharedViewPredictor(model, [Protocol(False, False, None), Protocol(True, True, None)], SCALES, batch_views)(image)
    if batch_views:  # a pass of 2 views per scale; the single-scale view keeps its own pass of 1
        assert sorted(calls["backbone"]) == [1, 2, 2, 2] and calls["fc0"] == calls["head"] == 4
    else:  # 6 views, the single-scale one among them
        assert calls == {"backbone": [1] * 6, "fc0": 6, "head": 6}
    fcn = _model(tiny_config, "fcn")
    calls = _counting(fcn)
    SharedViewPredictor(fcn, fig4, SCALES, batch_views)(image)
    assert calls == {"backbone": [1], "fc0": 1, "head": 1}  # no EMA unit: T_eval changes nothing


def test_default_t_eval_is_the_configured_one(tiny_config):
    """``ss`` runs at model.ema.eval_stages when it is set (the old loop reset it to T_train)."""
    image = torch.randn(3, 67, 93)
    model = _model(tiny_config, eval_stages=1)  # T_train = 3
    ss = SharedViewPredictor(model, [Protocol(False, False, None)])(image)[0]
    assert torch.equal(ss, SharedViewPredictor(model, [Protocol(False, False, 1)])(image)[0])
    assert not torch.equal(ss, SharedViewPredictor(model, [Protocol(False, False, 3)])(image)[0])
    assert [u.eval_stages for u in model.ema_units()] == [1]


def test_predict_is_the_reference(tiny_config):
    model = _model(tiny_config)
    image = torch.randn(3, 97, 65)
    for scales, flip in ((None, False), (SCALES, True), ([1.0], False), (None, True)):
        assert torch.equal(predict(model, image, scales, flip), reference_predict(model, image, scales, flip))


def test_loader_keeps_order_and_shares_images_between_ranks(prepared_root):
    dataset = SegmentationDataset(prepared_root / "voc", "val", EvalTransform())
    seen = []
    for rank in range(2):
        for index, image, label in eval_loader(SegmentationDataset(prepared_root / "voc", "val"), rank, 2, workers=2):
            expected_image, expected_label = dataset[index]
            assert torch.equal(image, expected_image) and torch.equal(label.long(), expected_label)
            seen.append(index)
    assert seen == list(range(0, len(dataset), 2)) + list(range(1, len(dataset), 2))


def _tiny_run(tmp_path, prepared_root, *sets):
    cfg = resolve(
        load_params(ROOT / "params.yaml"),
        "tiny",
        [f"data.root={prepared_root}", "tracking.enabled=false", *sets],
        "ema512",
    )
    run_dir = tmp_path / "runs/ema512"
    run_dir.mkdir(parents=True)
    torch.save(build_model(cfg.model, num_classes=21).state_dict(), run_dir / "model.pt")
    return cfg, run_dir


def test_evaluate_gives_the_reference_matrices(tmp_path, prepared_root, capsys):
    """One pass over the split, decoded in 2 workers, every protocol at once: each protocol's confusion
    matrix is the one of the per-image, per-protocol reference, bit for bit."""
    cfg, run_dir = _tiny_run(tmp_path, prepared_root, "data.workers=2")
    names = list(PROTOCOLS)
    results = evaluate(cfg, run_dir, names)
    model = load_trained(cfg, run_dir, 21, torch.device("cpu"))
    dataset = SegmentationDataset(prepared_root / "voc", "val", EvalTransform())
    expected = reference_matrices(model, dataset, [dataclasses.astuple(PROTOCOLS[n]) for n in names], cfg.eval.scales)
    for name, matrix in zip(names, expected, strict=True):
        path = run_dir / ("metrics.json" if name == "ss" else f"metrics_{name}.json")
        assert json.loads(path.read_text())["confusion_matrix"] == matrix.tolist() == results[name]["confusion_matrix"]
    assert sum(map(sum, results["ss"]["confusion_matrix"])) > 0
    assert results["ss_T3"]["confusion_matrix"] == results["ss"]["confusion_matrix"]
    assert results["ss_T1"]["confusion_matrix"] != results["ss"]["confusion_matrix"]
    err = capsys.readouterr().err
    assert f"evaluate ema512 voc val {'+'.join(names)}: {len(dataset)}/{len(dataset)} images (100.0%)" in err
    assert "images/s" in err and "\r" not in err


def test_metrics_json_is_compact(tmp_path, prepared_root):
    cfg, run_dir = _tiny_run(tmp_path, prepared_root)
    result = evaluate(cfg, run_dir, ["ss"])["ss"]
    text = (run_dir / "metrics.json").read_text()
    assert json.loads(text)["confusion_matrix"] == result["confusion_matrix"]
    lines = text.splitlines()
    rows = [line for line in lines if line.strip().startswith("[") and line.strip().rstrip(",").endswith("]")]
    assert len(rows) == 21, "one line per confusion matrix row"
    assert len(lines) < 21 + len(result["per_class"]) + 40, len(lines)


def test_amp_off_cuda_is_refused_naming_the_key(tmp_path, prepared_root):
    cfg, run_dir = _tiny_run(tmp_path, prepared_root, "train.amp=bf16")
    with pytest.raises(ConfigError, match=r"train\.amp=bf16 needs a CUDA device.*--set train\.amp=none"):
        evaluate(cfg, run_dir, ["ss"])


@pytest.mark.parametrize("batch_views", [False, True])
def test_autocast_runs_every_protocol_in_bfloat16(tiny_config, batch_views):
    """The AMP path (CUDA's, here under CPU autocast): softmaxes summed in float32, class maps as in float32
    except near-ties (measured 99.1-99.6 % of the pixels agree on this untrained model)."""
    model = _model(tiny_config)
    protocols = list(PROTOCOLS.values())
    image = torch.randn(3, 67, 93)
    exact = SharedViewPredictor(model, protocols, SCALES)(image)
    amp = SharedViewPredictor(model, protocols, SCALES, batch_views, autocast_dtype=torch.bfloat16)(image)
    for protocol, full, half in zip(protocols, exact, amp, strict=True):
        assert half.dtype == torch.int64 and half.shape == full.shape
        assert (half == full).float().mean() > 0.95, protocol
