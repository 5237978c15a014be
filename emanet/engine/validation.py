"""Validation during training (``train.eval_interval`` iterations, on ``data.val_split``): the val_miou
column of ``train_log.csv``. It never changes the weights (the model goes back to training mode and the RNG
state is restored), so neither setting is in the training identity and this module is not training code
(:data:`emanet.runs.code.NOT_DETERMINING`); the evaluation's own pass does the scoring."""

from __future__ import annotations

from torch import nn

from emanet.config import Config
from emanet.data.loading.dataset import SegmentationDataset
from emanet.engine import checkpoint
from emanet.engine import dist as edist


def validation_miou(cfg: Config, ctx: edist.DistContext, model: nn.Module, dataset: SegmentationDataset) -> float:
    """Single-scale mIoU (a fraction) of the training ``model`` (the bare one, at the training output
    stride) on ``dataset`` (``data.val_split`` of the training data), by the evaluation's own pass
    (:func:`emanet.engine.evaluate.score`) summed over the ranks; every rank must call it. The model goes
    back to training mode and the RNG state is restored, so the training continues exactly as without it."""
    from emanet.engine.evaluate import autocast_dtype, score
    from emanet.engine.inference import Protocol, SharedViewPredictor
    from emanet.engine.metrics import scores

    rng = checkpoint.rng_state()  # the loader's base seed is drawn from the global RNG
    model.eval()
    try:
        predictor = SharedViewPredictor(
            model, [Protocol(False, False, None)], autocast_dtype=autocast_dtype(cfg, ctx.device)
        )
        desc = f"validate {cfg.experiment} {dataset.meta['dataset']} {cfg.data.val_split} ss"
        matrix = score(predictor, dataset, ["ss"], ctx, cfg.data.workers, desc)["ss"]
        edist.all_reduce_sum(matrix)
    finally:
        model.train()
        checkpoint.set_rng_state(rng)
    return scores(matrix.cpu().numpy(), dataset.classes)["miou"]
