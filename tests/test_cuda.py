"""What only a GPU can check: AMP training steps, SyncBatchNorm under nccl, channels_last (marked ``cuda``).

Skipped without CUDA; benchmarks/gpu_check.sh runs them (``pytest -m cuda``). Each builds the tiny
profile's model on the GPU and runs the engine's own step (:class:`TrainingStep`, :func:`train_step`).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from emanet.bench.training import synthetic_batches
from emanet.config import load_params, resolve
from emanet.engine.dist import DistContext
from emanet.engine.train import TrainingStep, train_step
from emanet.models import build_model
from tests.helpers.runs import ROOT

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")]
CLASSES, IGNORE = 21, 255


def _cfg(*sets: str):
    return resolve(
        load_params(ROOT / "params.yaml"),
        "tiny",
        ["train.device=cuda", "train.deterministic=false", "train.batch_size=4", *sets],
        "ema512",
    )


def _step(cfg, distributed: bool = False) -> TrainingStep:
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(cfg.model, pretrained=None), CLASSES)
    ctx = DistContext(0, 1, 0, torch.device("cuda", 0), launched=distributed)
    step = TrainingStep.build(cfg, ctx, model, IGNORE)
    step.model.train()
    return step


def _batch(cfg):
    return next(synthetic_batches(cfg.train.batch_size, cfg.train.crop_size, CLASSES, IGNORE, 0))


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_steps_have_finite_losses_and_move_the_weights(amp):
    cfg = _cfg(f"train.amp={amp}")
    step = _step(cfg)
    before = {k: v.detach().clone() for k, v in step.model.state_dict().items()}
    images, labels = step.to_device(*_batch(cfg))
    losses = [train_step(step, images, labels, 0.01).item() for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert step.scaler.is_enabled() == (amp == "fp16")
    if amp == "fp16":
        assert torch.isfinite(torch.tensor(step.scaler.get_scale()))
    after = step.model.state_dict()
    still = [n for n, p in step.model.named_parameters() if p.requires_grad and torch.equal(before[n], after[n])]
    assert not still, f"parameters that three steps did not move: {still[:5]}"
    assert all(p.dtype == torch.float32 for p in step.model.parameters()), "AMP keeps float32 master weights"


def test_syncbn_under_nccl_in_one_process(tmp_path):
    """One process in an nccl group (what torchrun --nproc_per_node=1 gives): torch's SyncBatchNorm, DDP, a
    finite step; alone in its group SyncBatchNorm normalises as BatchNorm2d does."""
    import torch.distributed as dist

    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        cfg = _cfg()
        step = _step(cfg, distributed=True)
        assert isinstance(step.net, nn.parallel.DistributedDataParallel)
        syncs = [m for m in step.model.modules() if isinstance(m, nn.SyncBatchNorm)]
        assert syncs and not any(type(m) is nn.BatchNorm2d for m in step.model.modules())
        images, labels = step.to_device(*_batch(cfg))
        loss = train_step(step, images, labels, 0.01)
        assert torch.isfinite(loss)
        x = torch.randn(4, syncs[0].num_features, 9, 9, device="cuda")
        plain = nn.BatchNorm2d(syncs[0].num_features).cuda().train()
        sync = nn.SyncBatchNorm(syncs[0].num_features).cuda().train()
        torch.testing.assert_close(sync(x), plain(x), atol=1e-5, rtol=1e-5)
    finally:
        dist.destroy_process_group()


def test_channels_last_gives_the_contiguous_results():
    """The same weights and batch in both memory formats: logits, loss and gradients agree to float32
    rounding (TF32 off, so only the kernels' summation order differs)."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        results = []
        for channels_last in (False, True):
            cfg = _cfg(f"train.channels_last={str(channels_last).lower()}", "model.dropout=0.0")
            step = _step(cfg)
            images, labels = step.to_device(*_batch(cfg))
            assert images.is_contiguous(memory_format=torch.channels_last) == channels_last
            loss = train_step(step, images, labels, 0.0)  # lr 0: gradients, no update
            grads = {n: p.grad.detach().clone() for n, p in step.model.named_parameters() if p.grad is not None}
            step.model.eval()
            with torch.no_grad():
                logits = step.model(images)
            results.append((loss.item(), grads, logits.contiguous()))
        (loss_a, grads_a, logits_a), (loss_b, grads_b, logits_b) = results
        assert loss_a == pytest.approx(loss_b, rel=1e-5)
        torch.testing.assert_close(logits_b, logits_a, atol=1e-4, rtol=1e-4)
        assert grads_a.keys() == grads_b.keys()
        for name in grads_a:  # relative to the largest gradient: the EM iterations amplify rounding (CPU: 2e-3)
            worst = (grads_b[name] - grads_a[name]).abs().max().item()
            assert worst <= 1e-2 * grads_a[name].abs().max().item() + 1e-7, (name, worst)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
