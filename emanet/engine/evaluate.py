"""``emanet evaluate``: single-scale as the official code, and multi-scale + flip, on 1..N processes.

Single-scale (docs/reproducing.md#evaluation-protocol):
the whole image, batch 1, padded bottom/right to 8k+1, logits upsampled
bilinearly with ``align_corners=True``, argmax over the unpadded region. Multi-scale + flip: softmax
probabilities averaged over every scale and flip, each resized back to the image (§5.2; the paper never
published its scales, so they are recorded with the result). One confusion matrix over the whole
split: each process takes every W-th image (no padding of the split, so no image counts twice), and
the matrices are summed, so 1 and N processes give identical matrices.

All protocols of one call are scored in one pass over the split: each image is decoded and normalised
once, in DataLoader workers (``data.workers``), and its forward passes are shared between the protocols
(:mod:`emanet.engine.inference`: one backbone pass per view for every T_eval, the SS view shared with
MS+flip). On CUDA the plain and mirrored views go through the network together, under the configured
``train.amp``. Rank 0 shows progress (images/s, ETA) on stderr (:mod:`emanet.progress`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emanet.config import Config
from emanet.data.archives.transfer import file_digests
from emanet.data.loading.dataset import SegmentationDataset
from emanet.data.loading.eval_loader import eval_loader
from emanet.data.loading.transforms import pad_to_8k1
from emanet.engine import dist as edist
from emanet.engine import submission
from emanet.engine.inference import SharedViewPredictor
from emanet.engine.metrics import confusion_matrix, metrics_json, scores
from emanet.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from emanet.models import Segmentor, build_model
from emanet.models.weights import load_state, read_model_weights
from emanet.progress import progress
from emanet.protocols import Protocol
from emanet.runs import folder
from emanet.runs.record import now, record_evaluation
from emanet.tracking import git_commit, sync_run

log = logging.getLogger(__name__)
SCALES_NOTE = "the paper never published its multi-scale test scales; these are ours"


def inference_model(
    cfg: Config,
    state: dict[str, torch.Tensor],
    num_classes: int,
    device: torch.device,
    source: str | Path,
    foreign: bool = False,
) -> Segmentor:
    """An eval-mode model of ``cfg``'s architecture holding ``state`` (emanet's names), built at
    ``eval.output_stride`` when set (a dilated ResNet has the same weights at every output stride).

    ``foreign``: the state comes from another code base (`emanet import-weights`, ``predict --weights``),
    so BatchNorm's ``num_batches_tracked`` may be absent. Raises WeightLoadError naming ``source`` when
    the weights do not fit (see :func:`emanet.models.weights.load_state`).
    """
    stride = cfg.eval.output_stride or cfg.model.output_stride  # same weights, other strides and dilations
    model = build_model(dataclasses.replace(cfg.model, pretrained=None, output_stride=stride), num_classes)
    load_state(
        model,
        state,
        source,
        f"the model of experiment {cfg.experiment!r}",
        optional_counters=foreign,
        importing=foreign,
    )
    return model.to(device).eval()


def load_trained(cfg: Config, run_dir: Path, num_classes: int, device: torch.device) -> Segmentor:
    """The run's final weights (``model.pt``, a plain state dict, trained or imported) in an eval-mode
    model (:func:`inference_model`)."""
    weights = run_dir / folder.MODEL
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights}: no trained model; run `emanet train` for this experiment first "
            f"(or `emanet import-weights FILE --experiment {cfg.experiment}`)"
        )
    return inference_model(cfg, read_model_weights(weights), num_classes, device, weights)


def predict(model: Segmentor, image: torch.Tensor, scales: Sequence[float] | None, flip: bool) -> torch.Tensor:
    """Class map (H, W) for one normalised image (3, H, W) already on the model's device: single-scale
    when ``scales`` is empty and ``flip`` is off, else softmax averaged over ``scales`` (default 1.0) and
    flips. The model's T_eval as it is. Views are batched on CUDA (:class:`SharedViewPredictor`)."""
    protocol = Protocol(multi_scale=bool(scales), flip=flip, stages=None)
    return SharedViewPredictor(model, [protocol], scales, batch_views=image.is_cuda)(image)[0]


@torch.no_grad()
def responsibilities(model: Segmentor, image: torch.Tensor) -> torch.Tensor:
    """The EMA unit's responsibilities Z of the last E-step over one normalised image (3, H, W) on the
    model's device: (K, H, W), each pixel's K values summing to 1 (the paper's Fig. 5).

    One single-scale pass as :func:`predict` makes it (padded to 8k+1), recording the Z of the unit's own
    last EM iteration (T_eval); Z is resized from the feature grid to the padded image (bilinear,
    ``align_corners=True``, as the logits) and cropped. Raises ValueError for a model without an EMA unit.
    """
    unit = next(model.ema_units(), None)
    if unit is None:
        raise ValueError("responsibility maps need a model with an EMA head (model.head: ema)")
    em, recorded = unit.em, []

    def recording_em(x: torch.Tensor, stages: int | None = None):
        z, mu = em(x, stages)
        recorded.append(z)
        return z, mu

    h, w = image.shape[-2:]
    padded, _ = pad_to_8k1(image)
    unit.em = recording_em  # an instance attribute: shadows the method for this one pass
    try:
        features = model.backbone(padded[None])
        model.head(features)
    finally:
        del unit.em
    feature_h, feature_w = features.shape[-2:]
    maps = recorded[-1][0].T.reshape(1, -1, feature_h, feature_w)
    return F.interpolate(maps, size=padded.shape[-2:], mode="bilinear", align_corners=True)[0, :, :h, :w]


def save_prediction(path: Path, pred: torch.Tensor) -> None:
    """A palette PNG in the VOC colour map, the format the VOC evaluation server expects."""
    from emanet.data.classes import palette_png

    atomic_write_bytes(path, palette_png(pred.cpu().numpy().astype(np.uint8)))


def evaluate(
    cfg: Config,
    run_dir: Path,
    protocols: Sequence[str],
    scales: Sequence[float] | None = None,
    split: str | None = None,
    save_predictions: Path | None = None,
) -> dict[str, dict]:
    """Score the run's model under each protocol (``ss``, ``ms_flip``, ``ss_T5``...), loading it once.

    Rank 0 writes ``metrics.json`` (``ss``) or ``metrics_<protocol>.json`` per protocol (replacing what an
    earlier evaluation wrote), records in run.json what determined each (its evaluation identity, the
    model.pt's SHA-256, the code digest: :func:`emanet.runs.folder.evaluation_record`), and returns
    {protocol: metrics}. Predictions are saved for the first protocol only.
    """
    ctx = edist.init(cfg.train.device, cfg.train.cpu_threads)
    try:
        return _evaluate(cfg, Path(run_dir), ctx, list(protocols), scales, split, save_predictions)
    finally:
        edist.cleanup()


def eval_root(cfg: Config) -> Path:
    """The prepared dataset evaluated on: ``eval.dataset`` (e.g. voc_test), else the training one."""
    return Path(cfg.data.root) / (cfg.eval.dataset or cfg.data.dataset)


def autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The dtype evaluation runs the network in under ``train.amp`` (None: no autocast). Raises ConfigError
    for an unknown value, or AMP off CUDA, as training does (:func:`emanet.engine.precision.amp_dtype`)."""
    from emanet.engine.precision import amp_dtype

    return amp_dtype(cfg.train.amp, device, "evaluation", ": pass --set train.amp=none to evaluate in float32")


def _evaluate(cfg, run_dir, ctx, protocols, scales, split, save_predictions) -> dict[str, dict]:
    split = split or cfg.eval.split
    started = now()
    parsed = {name: Protocol.parse(name) for name in protocols}
    dataset = SegmentationDataset(eval_root(cfg), split)
    model = load_trained(cfg, run_dir, dataset.num_classes, ctx.device)
    used_scales = list(scales or cfg.eval.scales)
    used = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, scales=used_scales, split=split))
    checksum = dataset.meta["label_checksum"] or dataset.meta["image_checksum"]
    model_sha = folder.model_sha256(run_dir) if ctx.is_main else None
    records = {name: folder.evaluation_record(used, name, model_sha, checksum) for name in protocols}
    predictor = SharedViewPredictor(
        model,
        list(parsed.values()),
        used_scales,
        batch_views=ctx.device.type == "cuda",
        autocast_dtype=autocast_dtype(cfg, ctx.device),
    )
    pending = {name: run_dir / f".submission_{name}.tmp" for name in protocols}
    where = f" (rank 0 of {ctx.world_size})" if ctx.distributed else ""
    desc = f"evaluate {cfg.experiment} {dataset.meta['dataset']} {split} {'+'.join(protocols)}{where}"
    matrices = score(predictor, dataset, protocols, ctx, cfg.data.workers, desc, save_predictions, pending)
    results = {}
    for name, protocol in parsed.items():
        multi_scale, flip, stages = protocol.multi_scale, protocol.flip, protocol.stages
        protocol_scales = used_scales if multi_scale else None
        if not dataset.labelled:
            results[name] = _package(
                cfg, run_dir, ctx, dataset, pending[name], name, protocol_scales, flip, stages, records[name]
            )
            continue
        edist.all_reduce_sum(matrices[name])
        results[name] = _result(cfg, dataset, matrices[name], name, split, protocol_scales, flip, stages, records[name])
        if ctx.is_main:
            write_metrics(run_dir, results[name], default=name == "ss")
    if ctx.is_main:
        if split == cfg.eval.split:  # what the report's run figures draw (emanet.engine.samples)
            from emanet.engine.samples import write_samples

            write_samples(model, dataset, run_dir, ctx.device)
        record_evaluation(run_dir, folder.read_info(run_dir), records, started, ctx.device)
        sync_to_mlflow(run_dir, cfg.tracking.enabled)
    return results


def score(
    predictor: SharedViewPredictor,
    dataset: SegmentationDataset,
    protocols: Sequence[str],
    ctx: edist.DistContext,
    workers: int,
    desc: str,
    save_predictions: Path | None = None,
    pending: dict[str, Path] | None = None,
) -> dict[str, torch.Tensor]:
    """One pass of ``predictor`` (its protocols named ``protocols``) over this rank's images, decoded by
    ``workers`` DataLoader processes: {protocol: this rank's confusion matrix (int64, on the device, not yet
    summed over ranks)}. A split without labels has no matrices: each protocol's predictions are written as
    PNGs under ``pending[protocol]`` instead. ``save_predictions``: the first protocol's predictions as PNGs
    there too. Rank 0 reports progress as ``desc``.
    """
    n = dataset.num_classes
    matrices = {name: torch.zeros(n, n, dtype=torch.int64, device=ctx.device) for name in protocols}
    loader = eval_loader(dataset, ctx.rank, ctx.world_size, workers, pin_memory=ctx.device.type == "cuda")
    with progress(total=len(loader), desc=desc, unit="images", enabled=ctx.is_main) as bar:
        for index, image, label in loader:
            preds = predictor(image.to(ctx.device, non_blocking=True))
            if label is not None:
                label = label.to(ctx.device, non_blocking=True)  # once per image, whatever the protocols
            for name, pred in zip(protocols, preds, strict=True):
                if label is None:  # a split without labels: predictions for the evaluation server
                    save_prediction(pending[name] / f"{dataset.ids[index]}.png", pred)
                    continue
                matrices[name] += confusion_matrix(pred, label, n, dataset.meta["ignore_index"])
                if save_predictions is not None and name == protocols[0]:
                    save_prediction(Path(save_predictions) / f"{dataset.ids[index]}.png", pred)
            bar.update(1)
    return matrices


def _package(cfg, run_dir, ctx, dataset, pending, protocol, scales, flip, stages, record) -> dict:
    """Package a split without labels, predicted into ``pending``, for the evaluation server
    (``submission_<protocol>``).

    With ``eval.server_labels`` (synthetic data), the package is scored as the server would score it
    and the metrics are written as for any split; otherwise the result says where the package is.
    """
    edist.barrier()
    tarball = folder.submission_path(run_dir, protocol, "tar.gz")
    result = {
        "protocol": protocol,
        "split": dataset.split,
        "dataset": dataset.meta["dataset"],
        "images": len(dataset),
        "scales": scales or [1.0],
        "flip": flip,
        "submission": str(tarball),
        "miou": None,
        "server": submission.SERVER_URL,
        "experiment": cfg.experiment,
        "evaluation_identity": record["identity"]["digest"],
        "model_sha256": record["model_sha256"],
    }
    if ctx.is_main:
        submission.package(pending, dataset.ids, tarball)
        shutil.rmtree(pending, ignore_errors=True)
        result["submission_sha256"] = file_digests(tarball, ["sha256"])["sha256"]
        if cfg.eval.server_labels:
            matrix = submission.score(
                tarball, Path(cfg.eval.server_labels), dataset.ids, dataset.num_classes, dataset.meta["ignore_index"]
            )
            scored = _result(cfg, dataset, matrix, protocol, dataset.split, scales, flip, stages, record)
            result = {
                **scored,
                "submission": str(tarball),
                "submission_sha256": result["submission_sha256"],
                "scored_by": f"local stand-in for the evaluation server, ground truth {cfg.eval.server_labels}",
            }
            write_metrics(run_dir, result, default=protocol == "ss")
        else:
            log.warning(
                "%s: upload to %s, then `emanet submission record --experiment %s --protocol %s --miou ...`",
                tarball,
                submission.SERVER_URL,
                cfg.experiment,
                protocol,
            )
        atomic_write_json(
            folder.submission_path(run_dir, protocol, "json"),
            {k: v for k, v in result.items() if k != "confusion_matrix"},
        )
    edist.barrier()
    return result


def _result(cfg, dataset, matrix, protocol, split, scales, flip, stages, record) -> dict:
    """One protocol's metrics*.json: scores (fractions: ``miou`` 0..1, as MLflow logs them; the report shows
    percentages), where they were measured, the evaluation identity's digest and the SHA-256 of the scored
    model.pt (``record``: :func:`emanet.runs.folder.evaluation_record`), and the confusion matrix (rows =
    ground truth)."""
    result = scores(matrix.cpu().numpy(), dataset.classes)
    trained_t = cfg.model.ema.eval_stages or cfg.model.ema.stages
    result.update(
        protocol=protocol,
        dataset=dataset.meta["dataset"],
        split=split,
        images=len(dataset),
        scales=scales or [1.0],
        flip=flip,
        output_stride=cfg.eval.output_stride or cfg.model.output_stride,
        eval_stages=(stages or trained_t) if cfg.model.head == "ema" else None,
        evaluation_identity=record["identity"]["digest"],
        model_sha256=record["model_sha256"],
        git_commit=git_commit(),
        data_checksum=dataset.meta["label_checksum"] or dataset.meta["image_checksum"],
        experiment=cfg.experiment,
        confusion_matrix=matrix.cpu().tolist(),
    )
    if scales:
        result["note"] = SCALES_NOTE
    return result


def write_metrics(run_dir: Path, result: dict, default: bool) -> Path:
    """``metrics.json`` for the default protocol (SS, T_eval as trained), ``metrics_<protocol>.json`` else
    (:func:`emanet.runs.folder.metrics_path`), and the per-class CSV beside it; an earlier one is replaced."""
    protocol = "ss" if default else result["protocol"]
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["class", "iou"])
    writer.writerows([name, "" if iou is None else f"{iou:.6f}"] for name, iou in result["per_class"].items())
    atomic_write_text(folder.per_class_path(run_dir, protocol), rows.getvalue())
    return atomic_write_text(folder.metrics_path(run_dir, protocol), metrics_json(result))


def sync_to_mlflow(run_dir: Path, enabled: bool) -> None:
    """Mirror the run folder's new metrics into its MLflow run (the store ``run.json`` names); a failure only
    warns (replay later). Nothing when ``enabled`` (``tracking.enabled``) is false, whatever ``run.json``
    names, or when the run was never tracked (``run.json`` names no store)."""
    info = folder.read_info(run_dir)
    if not enabled or not info.get("tracking_uri"):
        return
    try:
        sync_run(run_dir)
    except Exception as exc:  # noqa: BLE001 - results are on disk; tracking can be replayed later
        log.warning("could not log the metrics to MLflow (%s); run `emanet track sync %s` later", exc, run_dir)
