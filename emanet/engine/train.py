"""``emanet train``: the official recipe, iteration-based, on 1..N processes, resumable bit for bit.

One call trains one experiment into ``RUN_DIR`` (``OUT/runs/<experiment>``): ``config.yaml`` and
``run.json`` (the training identity and initial weights' digest, :mod:`emanet.runs.folder`; the training
code's digest, git commit, data checksum; when and where each stage ran, :mod:`emanet.runs.record`),
``train_log.csv`` (:data:`LOG_FIELDS`; rank 0 also prints them as progress lines), ``checkpoints/last.pt``
every ``train.checkpoint_interval`` iterations and ``model.pt`` (plain state dict) at the end. Rerunning
the same command resumes from ``last.pt``; with another training identity or other initial weights in the
same folder it refuses (evaluation and logging settings may change). Under torchrun the ranks share the
global batch, BatchNorm and the EMA
bases statistics are global (SyncBN on CUDA, a gloo version on CPU), only rank 0 writes.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from emanet.config import Config, ConfigError, flatten
from emanet.data.archives.catalog import pretrained_path
from emanet.data.layout import read_meta
from emanet.data.loading.dataset import SegmentationDataset
from emanet.data.loading.transforms import TrainTransform
from emanet.engine import checkpoint
from emanet.engine import dist as edist
from emanet.engine.optim import param_groups, poly_lr, set_lr
from emanet.engine.precision import AMP_DTYPES, amp_dtype  # noqa: F401 (AMP_DTYPES: train's choices)
from emanet.engine.sampler import IterationBatchSampler
from emanet.engine.syncbn import convert_sync_batchnorm
from emanet.engine.validation import validation_miou
from emanet.io import atomic_write_text
from emanet.models import build_model
from emanet.models.loss import segmentation_loss
from emanet.models.weights import load_model_weights
from emanet.progress import progress
from emanet.runs import folder
from emanet.runs.code import code_digest
from emanet.runs.record import train_finished, train_started
from emanet.tracking import Tracker, git_commit

log = logging.getLogger(__name__)
#: train_log.csv's columns: per log interval the mean loss over the ranks at its last iteration, the lr,
#: images/s (global batch), seconds since this process started training, mean seconds per iteration
#: spent waiting for data and in all (``time`` and ``data_time`` in mmseg's log), and the peak CUDA memory
#: allocated on rank 0 since the start in MiB (empty on CPU); every ``train.eval_interval`` iterations also
#: the single-scale mIoU on ``data.val_split`` as a fraction (:func:`validation_miou`; empty otherwise).
LOG_FIELDS = ("iteration", "loss", "lr", "images_per_s", "elapsed_s", "data_s", "step_s", "max_memory_mib", "val_miou")


def dataset_root(cfg: Config) -> Path:
    return Path(cfg.data.root) / cfg.data.dataset


def init_weights(cfg: Config, run_dir: Path) -> Path | None:
    """The final weights of ``train.init_from``, a sibling run folder (runs live side by side)."""
    if cfg.train.init_from is None:
        return None
    path = Path(run_dir).parent / cfg.train.init_from / folder.MODEL
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: train.init_from={cfg.train.init_from!r} has no trained model; train that experiment first"
        )
    return path


def initial_weights(cfg: Config, run_dir: Path) -> Path | None:
    """The file the run starts from: ``train.init_from``'s model.pt (:func:`init_weights`), else the
    pretrained backbone's checkpoint when it is there (None: from scratch, or not downloaded yet)."""
    init = init_weights(cfg, run_dir)
    if init is not None:
        return init
    pretrained = pretrained_path(cfg)
    return Path(pretrained) if pretrained and Path(pretrained).is_file() else None


def run_identity(cfg: Config, run_dir: Path) -> dict:
    """What a run folder must match to be resumed (:func:`emanet.runs.folder.training_record`): the training
    identity and the digest of the initial weights (a retrained parent run changes a fine-tuning run's
    starting point but not its settings)."""
    return folder.training_record(cfg, initial_weights(cfg, run_dir))


def validate(cfg: Config, world_size: int, device: torch.device) -> dict:
    """Every check that can fail before any work: returns the prepared data's meta.json."""
    validate_settings(cfg, world_size, device)
    return read_meta(dataset_root(cfg))


def validate_settings(cfg: Config, world_size: int, device: torch.device) -> None:
    """The training settings' checks (ConfigError naming the key, what is wrong and what to do), without the
    data: a batch of at least one image per process, a crop of at least one pixel, ``data.workers`` >= 0,
    a known AMP mode on CUDA, iteration counts >= 1."""
    if cfg.train.batch_size < 1:
        raise ConfigError(
            f"train.batch_size must be >= 1 (the global batch, over all processes), got "
            f"{cfg.train.batch_size}: set it in params.yaml or with --set train.batch_size=N"
        )
    if cfg.train.crop_size < 1:
        raise ConfigError(
            f"train.crop_size must be >= 1 (the side of the square training crop, in pixels), got "
            f"{cfg.train.crop_size}: set it in params.yaml or with --set train.crop_size=N"
        )
    if cfg.data.workers < 0:
        raise ConfigError(
            f"data.workers must be >= 0 (DataLoader processes; 0 loads in the main process), got "
            f"{cfg.data.workers}: set it in params.yaml or with --set data.workers=N"
        )
    if cfg.train.batch_size % world_size:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} is not divisible by the {world_size} processes")
    amp_dtype(cfg.train.amp, device)
    for key in ("iterations", "checkpoint_interval", "log_interval"):
        if getattr(cfg.train, key) < 1:
            raise ConfigError(
                f"train.{key} must be >= 1, got {getattr(cfg.train, key)}: set it in params.yaml "
                f"or with --set train.{key}=N"
            )
    if cfg.train.eval_interval < 0:
        raise ConfigError(
            f"train.eval_interval must be >= 0 (0 = no validation during training), got {cfg.train.eval_interval}"
        )


def seed_everything(seed: int, rank: int) -> None:
    """Seed torch, NumPy and Python; ranks differ so dropout differs across ranks as it would on GPUs."""
    torch.manual_seed(seed + rank)
    np.random.seed(seed + rank)
    random.seed(seed + rank)


def configure_backends(deterministic: bool, device: torch.device) -> None:
    """Process-wide kernel choices for training on ``device`` (``train.deterministic``).

    Deterministic: ``torch.use_deterministic_algorithms`` (strict on CPU: bit-exact resume), cuDNN's
    deterministic kernels and cuBLAS's fixed workspace (CUBLAS_WORKSPACE_CONFIG, set here unless the
    environment gives it; it must precede the first cuBLAS call). On CUDA two of the model's operations
    have no deterministic kernel (the bilinear upsampling's backward and the NLL loss), so there torch
    only warns about them and a CUDA resume is exact up to their atomic-add order. Not deterministic:
    ``cudnn.benchmark`` picks the fastest convolution algorithms for the fixed crop size.
    """
    if deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


@dataclasses.dataclass
class TrainingStep:
    """Everything one training iteration touches, built once by :meth:`build`; :func:`train_step` runs it.

    ``model`` is the bare model (its state dict goes into checkpoints); ``net`` is what runs: ``model``
    wrapped in DistributedDataParallel under torchrun, then in ``torch.compile`` when ``train.compile``.
    Both the engine and ``emanet bench train`` run iterations through this object, so they time and
    train the same code.
    """

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: torch.autocast | nullcontext
    memory_format: torch.memory_format
    device: torch.device
    ignore_index: int
    loss_normalization: str

    @classmethod
    def build(cls, cfg: Config, ctx: edist.DistContext, model: nn.Module, ignore_index: int) -> TrainingStep:
        """SyncBN under torchrun (CUDA: torch's, CPU: the gloo version), the device and memory format,
        SGD over the official parameter groups, the AMP gradient scaler (fp16 only), DDP and compile.

        Load checkpoints into ``step.model`` / ``step.optimizer`` / ``step.scaler`` afterwards: every
        rank loads the same file, so DDP's start-up broadcast and the loaded state agree.
        """
        t = cfg.train
        if ctx.distributed:
            model = convert_sync_batchnorm(model, ctx.device)
        memory_format = torch.channels_last if t.channels_last else torch.preserve_format
        model.to(ctx.device, memory_format=memory_format)
        optimizer = torch.optim.SGD(param_groups(model, t.lr, t.weight_decay), lr=t.lr, momentum=t.momentum)
        scaler = torch.amp.GradScaler(ctx.device.type, enabled=t.amp == "fp16")
        net = (
            DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
            if ctx.distributed
            else model
        )
        if t.compile:
            net = torch.compile(net)
        dtype = amp_dtype(t.amp, ctx.device)
        autocast = torch.autocast(ctx.device.type, dtype=dtype) if dtype is not None else nullcontext()
        return cls(
            model, net, optimizer, scaler, autocast, memory_format, ctx.device, ignore_index, t.loss_normalization
        )

    def to_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A loader batch (images (B, 3, H, W) float, labels (B, H, W) int64) on the device, images in the
        step's memory format."""
        return (
            images.to(self.device, non_blocking=True, memory_format=self.memory_format),
            labels.to(self.device, non_blocking=True),
        )


def train_step(
    step: TrainingStep, images: torch.Tensor, labels: torch.Tensor, lr: float, mark: Callable[[str], None] | None = None
) -> torch.Tensor:
    """One SGD iteration at learning rate ``lr`` on a batch already on the device; returns the loss (a
    0-d tensor, not synchronised). ``mark(phase)`` is called after ``forward`` (the loss included),
    ``backward`` and ``optimizer``: the benchmark's clock; training passes none."""
    set_lr(step.optimizer, lr)
    with step.autocast:
        logits = step.net(images)
    loss = segmentation_loss(logits, labels, step.ignore_index, step.loss_normalization)
    if mark:
        mark("forward")
    step.optimizer.zero_grad(set_to_none=True)
    step.scaler.scale(loss).backward()
    if mark:
        mark("backward")
    step.scaler.step(step.optimizer)
    step.scaler.update()
    if mark:
        mark("optimizer")
    return loss


def train_loader(cfg: Config, ctx: edist.DistContext, dataset: SegmentationDataset, start: int) -> DataLoader:
    """This rank's batches of iterations ``start``..``train.iterations`` (:class:`IterationBatchSampler`)."""
    t = cfg.train
    sampler = IterationBatchSampler(len(dataset), t.batch_size, ctx.world_size, ctx.rank, t.seed, start, t.iterations)
    return DataLoader(
        dataset, batch_sampler=sampler, num_workers=cfg.data.workers, pin_memory=ctx.device.type == "cuda"
    )


def train_dataset(cfg: Config) -> SegmentationDataset:
    """The training split with the official augmentation (random scale, crop, flip) at ``train.crop_size``."""
    t = cfg.train
    return SegmentationDataset(
        dataset_root(cfg), cfg.data.train_split, TrainTransform(t.crop_size, tuple(t.scales)), t.seed
    )


def write_run_files(run_dir: Path, cfg: Config, meta: dict, world_size: int, identity: dict) -> None:
    """config.yaml (resolved) and run.json (identity, code digest, commit, data checksum); refuse a folder of
    another training identity or other initial weights (:func:`emanet.runs.folder.resume_conflict`)."""
    info = folder.read_info(run_dir)
    conflict = folder.resume_conflict(info, identity)
    if conflict:
        raise ConfigError(
            f"{run_dir} cannot be resumed: {conflict}; pass --replace-changed to set it aside, use another "
            f"--out, or remove the folder"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        run_dir / folder.CONFIG,
        f"# training identity {identity['training']['digest']}\n" + yaml.safe_dump(cfg.to_dict(), sort_keys=False),
    )
    slurm = os.environ.get("SLURM_JOB_ID")
    info.update(
        identity=identity,
        code={**(info.get("code") or {}), "train": code_digest("train")},
        init_from=cfg.train.init_from,
        experiment=cfg.experiment,
        profile=cfg.profile,
        dataset=cfg.data.dataset,
        git_commit=git_commit(),
        data_checksum=meta["label_checksum"],
        world_size=world_size,
        slurm_job_ids=sorted(set(info.get("slurm_job_ids", [])) | ({slurm} if slurm else set())),
    )
    folder.write_info(run_dir, info)


def _truncate_log(path: Path, last_iteration: int) -> None:
    """Keep the CSV rows up to the resumed checkpoint, so the log never shows an iteration twice."""
    if not path.exists():
        return
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if int(r["iteration"]) <= last_iteration]
    body = ",".join(LOG_FIELDS) + "\n" + "".join(",".join(r.get(f) or "" for f in LOG_FIELDS) + "\n" for r in rows)
    atomic_write_text(path, body)


def _append_log(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def peak_memory_mib(device: torch.device) -> float | None:
    """The most CUDA memory this process's tensors have held on ``device`` since it started, in MiB
    (``torch.cuda.max_memory_allocated``, mmseg's ``memory``); None off CUDA."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def _gather_rng() -> list:
    state = checkpoint.rng_state()
    if not (dist.is_available() and dist.is_initialized()):
        return [state]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def train(cfg: Config, run_dir: Path, tags: dict[str, str] | None = None) -> Path:
    """Train ``cfg`` into ``run_dir`` (resuming if a checkpoint is there); return the final weights' path."""
    ctx = edist.init(cfg.train.device, cfg.train.cpu_threads)
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.ERROR)
    try:
        return _train(cfg, Path(run_dir), ctx, tags or {})
    finally:
        edist.cleanup()


def _train(cfg: Config, run_dir: Path, ctx: edist.DistContext, tags: dict[str, str]) -> Path:
    meta = validate(cfg, ctx.world_size, ctx.device)
    t = cfg.train
    configure_backends(t.deterministic, ctx.device)
    seed_everything(t.seed, ctx.rank)
    dataset = train_dataset(cfg)
    init = init_weights(cfg, run_dir)
    identity = run_identity(cfg, run_dir)
    info = folder.read_info(run_dir)
    if (info.get("train") or {}).get("finished") and (run_dir / folder.MODEL).is_file():
        if not folder.resume_conflict(info, identity):  # only evaluation or logging settings changed, if any
            log.info("%s: already trained in %s; its model.pt is kept as it is", cfg.experiment, run_dir)
            return run_dir / folder.MODEL
    model = build_model(
        dataclasses.replace(cfg.model, pretrained=None if init else pretrained_path(cfg)), dataset.num_classes
    )
    step = TrainingStep.build(cfg, ctx, model, meta["ignore_index"])
    model, optimizer, scaler = step.model, step.optimizer, step.scaler

    last = run_dir / folder.LAST_CHECKPOINT
    if ctx.is_main:
        write_run_files(run_dir, cfg, meta, ctx.world_size, identity)
    edist.barrier()
    start, saved_rng = 0, None
    if init and not last.exists():
        load_model_weights(model, init)  # every parameter and buffer, EMA bases included
        log.info("%s: starting from %s", cfg.experiment, init)
    if last.exists():
        state = checkpoint.load(last, model, optimizer)  # CheckpointError naming the file if unreadable or a misfit
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start, saved_rng = state["iteration"], state["rng"]
        log.info("resuming %s from iteration %d", run_dir, start)
    tracker = None
    if ctx.is_main:
        folder.write_info(run_dir, train_started(folder.read_info(run_dir), start, ctx.device))
        _truncate_log(run_dir / folder.TRAIN_LOG, start)
        tracker = Tracker(
            run_dir,
            cfg.tracking.enabled,
            cfg.tracking.uri,
            cfg.tracking.experiment.format(profile=cfg.profile, dataset=cfg.data.dataset),
            cfg.experiment,
            flatten(cfg.to_dict()),
            _tags(cfg, meta, identity, tags),
        )

    batches = iter(
        train_loader(cfg, ctx, dataset, start)
    )  # draws the loader's base seed from the global RNG, so before restoring it
    if saved_rng is not None:
        checkpoint.set_rng_state(saved_rng[ctx.rank] if len(saved_rng) == ctx.world_size else saved_rng[0])
    bar = progress(
        total=t.iterations,
        initial=start,
        enabled=ctx.is_main,
        desc=f"train {cfg.experiment}",
        unit="it",
        every=t.log_interval,
        interval_s=0,
    )  # lines at the log interval, as mmseg's logger
    val_set = SegmentationDataset(dataset_root(cfg), cfg.data.val_split) if t.eval_interval else None
    began = window_start = ready = time.perf_counter()
    window_images, window_iterations, window_data = 0, 0, 0.0
    model.train()
    for iteration, (images, labels) in enumerate(batches, start=start):
        window_data += time.perf_counter() - ready  # waiting for the loader
        images, labels = step.to_device(images, labels)
        lr = poly_lr(t.lr, iteration, t.iterations, t.poly_power, t.lr_step_every)
        loss = train_step(step, images, labels, lr)
        window_images += images.shape[0] * ctx.world_size
        window_iterations += 1
        done = iteration + 1
        val_miou = None
        if val_set is not None and done % t.eval_interval == 0:
            paused = time.perf_counter()
            val_miou = validation_miou(cfg, ctx, model, val_set)
            window_start += time.perf_counter() - paused  # the log's times are training's alone
        logged = done % t.log_interval == 0 or done == t.iterations or val_miou is not None
        if logged:
            mean_loss = edist.all_reduce_sum(loss.detach().clone()) / ctx.world_size  # waits for the device
            now = time.perf_counter()
            seconds = max(now - window_start, 1e-9)
            speed, step_s = window_images / seconds, seconds / window_iterations
            data_s = window_data / window_iterations
            window_start, window_images, window_iterations, window_data = now, 0, 0, 0.0
            if ctx.is_main:
                memory = peak_memory_mib(ctx.device)
                row = {
                    "iteration": done,
                    "loss": f"{mean_loss.item():.6f}",
                    "lr": f"{lr:.8f}",
                    "images_per_s": f"{speed:.3f}",
                    "elapsed_s": f"{now - began:.2f}",
                    "data_s": f"{data_s:.4f}",
                    "step_s": f"{step_s:.4f}",
                    "max_memory_mib": "" if memory is None else f"{memory:.0f}",
                    "val_miou": "" if val_miou is None else f"{val_miou:.6f}",
                }
                _append_log(run_dir / folder.TRAIN_LOG, row)
                tracker.log_metrics(
                    {
                        "train/loss": mean_loss.item(),
                        "train/lr": lr,
                        "train/images_per_s": speed,
                        "train/elapsed_s": now - began,
                        "train/data_s": data_s,
                        "train/step_s": step_s,
                        **({} if memory is None else {"train/max_memory_mib": memory}),
                        **({} if val_miou is None else {"train/val_miou": val_miou}),
                    },
                    done,
                )
                bar.set_postfix(
                    loss=f"{mean_loss.item():.4f}",
                    lr=f"{lr:.3e}",
                    time=f"{step_s:.3f}",
                    data_time=f"{data_s:.3f}",
                    images_per_s=f"{speed:.1f}",
                    **({} if memory is None else {"memory": f"{memory:.0f}MiB"}),
                    **({} if val_miou is None else {"val_miou": f"{val_miou:.4f}"}),
                )
        if done % t.checkpoint_interval == 0 or done == t.iterations:
            rng = _gather_rng()
            if ctx.is_main:
                checkpoint.save(
                    last,
                    model=model.state_dict(),
                    optimizer=optimizer.state_dict(),
                    scaler=scaler.state_dict(),
                    iteration=done,
                    rng=rng,
                    training_identity=identity["training"]["digest"],
                )
        bar.update(1)
        if logged and done % t.log_interval:  # a row off the log interval (validation, the last iteration)
            bar.emit()
        ready = time.perf_counter()
    bar.close()
    final = run_dir / folder.MODEL
    if ctx.is_main:
        # the final weights as a plain state dict (loadable with weights_only=True)
        checkpoint.save_object(final, {k: v.detach().cpu() for k, v in model.state_dict().items()})
        train_finished(run_dir, {**folder.read_info(run_dir), "model": folder.model_record(final)})
        tracker.finish()
    edist.barrier()
    return final


def _tags(cfg: Config, meta: dict, identity: dict, extra: dict[str, str]) -> dict[str, str]:
    tags = {
        "experiment": cfg.experiment,
        "profile": cfg.profile,
        "dataset": cfg.data.dataset,
        "training_identity": identity["training"]["digest"],
        "git_commit": git_commit(),
        "data_checksum": meta["label_checksum"],
    }
    if os.environ.get("SLURM_JOB_ID"):
        tags["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    return {**tags, **extra}
