"""``emanet bench train``: the engine's own training iteration, timed phase by phase.

The step is :class:`emanet.engine.train.TrainingStep` and :func:`~emanet.engine.train.train_step`, the
objects ``emanet train`` runs: SyncBN + DDP under torchrun, AMP (``train.amp``), channels_last,
``torch.compile`` (``train.compile``), the official SGD parameter groups and poly learning rate, the
segmentation loss. Batches have the configured global ``train.batch_size`` (divided over the ranks)
and ``train.crop_size``, from two sources:

- ``synthetic``: one fixed batch of standard-normal images and uniform labels (5% ``ignore_index``),
  built once on the CPU: "data" is then only the copy to the device;
- ``loader``: the prepared training split through the engine's own Dataset, augmentation and
  DataLoader (``data.workers`` processes): "data" is the wait for the next batch plus the copy.

Each timed iteration is split into data / forward (the loss included) / backward / optimizer, with
``torch.cuda.synchronize`` at each boundary on CUDA so each phase's kernels are charged to it (this
costs a little overlap, so images/s is slightly below an unsynchronised run's). Under torchrun each
phase is the slowest rank's.

Peak memory on CUDA is ``torch.cuda.max_memory_allocated``, its peak statistics reset
(``torch.cuda.reset_peak_memory_stats``) before each timed iteration of each variant, the largest over
those iterations and, under torchrun, over the ranks. Allocated memory includes everything resident on
the device at the time, so with ``compare`` a variant's peak includes the other variants' weights,
gradients, optimizer state and batches; ``iteration_memory_bytes`` is the peak less what was allocated
when the iteration began: the memory the variant's own iteration adds (activations, temporaries), the
figure to compare between variants. On CPU there is no such counter: peak memory is the process's peak
resident set (``getrusage``: model building and every variant included, never reset; rank 0's under
torchrun) and ``iteration_memory_bytes`` is None. The weights are randomly initialised
(``model.pretrained`` is not read): speed does not depend on them.

``compare`` times variants of the configuration in one run, interleaved iteration by iteration so that
load on a shared machine hits them alike, and reports each one's images/s as a ratio to the first.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from emanet.config import Config, ConfigError
from emanet.data import classes
from emanet.data.files import DataError
from emanet.data.layout import read_meta
from emanet.engine import dist as edist
from emanet.engine.optim import poly_lr
from emanet.engine.train import (
    TrainingStep,
    configure_backends,
    dataset_root,
    seed_everything,
    train_dataset,
    train_loader,
    train_step,
    validate_settings,
)
from emanet.models import build_model

PHASES = ("data", "forward", "backward", "optimizer")
SOURCES = ("synthetic", "loader")

#: Classes of each dataset, for the synthetic source when the dataset is not prepared (meta.json rules).
CLASS_COUNTS = {
    "voc": len(classes.VOC_CLASSES),
    "voc_test": len(classes.VOC_CLASSES),
    "coco_voc": len(classes.VOC_CLASSES),
    "context": len(classes.CONTEXT59),
    "cocostuff10k": len(classes.cocostuff_class_names()),
    "cocostuff164k": len(classes.cocostuff_class_names()),
}

#: ``compare``'s variants: name -> train overrides; the first is the reference of the ratios.
COMPARE = {
    "eager": {"compile": False, "channels_last": False},
    "compile": {"compile": True, "channels_last": False},
    "channels_last": {"compile": False, "channels_last": True},
}


@dataclasses.dataclass
class _Clock:
    """Seconds per phase over the timed iterations; synchronises CUDA at every mark."""

    device: torch.device
    totals: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    running: bool = False
    _last: float = 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def start(self) -> None:
        self._last = self._now()

    def mark(self, phase: str) -> None:
        now = self._now()
        if self.running:
            self.totals[phase] += now - self._last
        self._last = now


def dataset_classes(cfg: Config) -> tuple[int, int, str | None]:
    """(number of classes, ignore index, why the loader cannot run or None) for ``data.dataset``."""
    try:
        meta = read_meta(dataset_root(cfg))
    except DataError as exc:
        if cfg.data.dataset not in CLASS_COUNTS:
            raise ConfigError(
                f"data.dataset {cfg.data.dataset!r}: unknown dataset (have {sorted(CLASS_COUNTS)})"
            ) from None
        return CLASS_COUNTS[cfg.data.dataset], classes.IGNORE, str(exc)
    return meta["num_classes"], meta["ignore_index"], None


def synthetic_batches(
    batch: int, crop: int, num_classes: int, ignore_index: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The same CPU batch forever: images (batch, 3, crop, crop) ~ N(0, 1), labels (batch, crop, crop) int64
    uniform over the classes with 5% ``ignore_index``."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, crop, crop, generator=gen)
    labels = torch.randint(0, num_classes, (batch, crop, crop), generator=gen)
    labels[torch.rand(batch, crop, crop, generator=gen) < 0.05] = ignore_index
    while True:
        yield images, labels


def _peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_memory_allocated"
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "process_peak_rss"


def _slowest(values: list[float], device: torch.device) -> list[float]:
    """Each value's maximum over the ranks (nccl reduces tensors on the rank's GPU)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.tolist()
    return values


@dataclasses.dataclass
class _Run:
    """One variant on one source: its step, its batches and its clock."""

    variant: str
    source: str
    cfg: Config
    step: TrainingStep
    batches: Iterator
    clock: _Clock
    losses: list[float] = dataclasses.field(default_factory=list)
    iteration: int = 0

    def once(self, timed: bool) -> None:
        t = self.cfg.train
        self.clock.running = timed
        self.clock.start()
        images, labels = self.step.to_device(*next(self.batches))
        self.clock.mark("data")
        lr = poly_lr(t.lr, self.iteration, t.iterations, t.poly_power, t.lr_step_every)
        loss = train_step(self.step, images, labels, lr, self.clock.mark)
        self.iteration += 1
        if timed:
            self.losses.append(loss.item())


def _variant_configs(cfg: Config, compare: bool) -> dict[str, Config]:
    if not compare:
        return {"config": cfg}
    return {
        name: dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **changes))
        for name, changes in COMPARE.items()
    }


def bench_train(
    cfg: Config, iterations: int, warmup: int, sources: Sequence[str] = SOURCES, compare: bool = False
) -> dict:
    """Time ``iterations`` training iterations (after ``warmup`` untimed ones) per variant and source.

    Returns {"setting": {...}, "results": [{variant, source, images_per_s, ms_per_iteration: {total, data,
    forward, backward, optimizer}, peak_memory_bytes, peak_memory_kind, iteration_memory_bytes (CUDA; None on
    CPU), loss_first, loss_last, loss_finite}], "skipped": [{source, reason}], "ratios": {source: {variant:
    images/s ratio to the first variant}} (compare only)}.
    Raises ConfigError for impossible settings (AMP on a CPU, a batch
    not divisible by the processes, iterations < 1) and when ``sources`` is only ``loader`` and the
    dataset is not prepared.
    """
    if iterations < 1 or warmup < 0:
        raise ConfigError(f"--iterations must be >= 1 and --warmup >= 0, got {iterations} and {warmup}")
    unknown = set(sources) - set(SOURCES)
    if unknown or not sources:
        raise ConfigError(f"sources must be among {SOURCES}, got {list(sources)}")
    ctx = edist.init(cfg.train.device, cfg.train.cpu_threads)
    try:
        return _bench(cfg, ctx, iterations, warmup, list(sources), compare)
    finally:
        edist.cleanup()


def _bench(
    cfg: Config, ctx: edist.DistContext, iterations: int, warmup: int, sources: list[str], compare: bool
) -> dict:
    t = cfg.train
    validate_settings(cfg, ctx.world_size, ctx.device)
    num_classes, ignore_index, missing = dataset_classes(cfg)
    skipped = []
    if missing and "loader" in sources:
        if sources == ["loader"]:
            raise ConfigError(f"--source loader needs the prepared dataset: {missing}")
        skipped.append({"source": "loader", "reason": missing})
        sources = [s for s in sources if s != "loader"]
    configure_backends(t.deterministic, ctx.device)
    local_batch = t.batch_size // ctx.world_size
    runs: list[_Run] = []
    for name, vcfg in _variant_configs(cfg, compare).items():
        seed_everything(t.seed, ctx.rank)  # every variant starts from the same weights
        model = build_model(dataclasses.replace(vcfg.model, pretrained=None), num_classes)
        step = TrainingStep.build(vcfg, ctx, model, ignore_index)
        step.model.train()
        for source in sources:
            if source == "synthetic":
                batches = synthetic_batches(local_batch, t.crop_size, num_classes, ignore_index, t.seed + ctx.rank)
            else:  # the engine's loader over just enough iterations
                short = dataclasses.replace(vcfg, train=dataclasses.replace(vcfg.train, iterations=warmup + iterations))
                batches = iter(train_loader(short, ctx, train_dataset(short), 0))
            runs.append(_Run(name, source, vcfg, step, batches, _Clock(ctx.device)))
    for run in runs:
        for _ in range(warmup):
            run.once(timed=False)
    peaks, added = [0] * len(runs), [0] * len(runs)
    kind = _peak_memory(ctx.device)[1]
    cuda = ctx.device.type == "cuda"
    for _ in range(iterations):  # interleaved: a slow moment of a shared machine hits every run alike
        for index, run in enumerate(runs):
            if cuda:  # this variant's iteration only: the peak starts from what is allocated now
                torch.cuda.synchronize(ctx.device)
                torch.cuda.reset_peak_memory_stats(ctx.device)
                resident = torch.cuda.memory_allocated(ctx.device)
            run.once(timed=True)
            peak = _peak_memory(ctx.device)[0]
            peaks[index] = max(peaks[index], peak)
            if cuda:
                added[index] = max(added[index], peak - resident)
    if cuda:  # the largest rank's
        peaks = [int(v) for v in _slowest([float(v) for v in peaks], ctx.device)]
        added = [int(v) for v in _slowest([float(v) for v in added], ctx.device)]
    results = []
    for index, run in enumerate(runs):
        seconds = _slowest([run.clock.totals[p] for p in PHASES], ctx.device)
        total = sum(seconds)
        results.append(
            {
                "variant": run.variant,
                "source": run.source,
                "images_per_s": t.batch_size * iterations / total if total > 0 else math.inf,
                "ms_per_iteration": {
                    "total": 1e3 * total / iterations,
                    **{p: 1e3 * s / iterations for p, s in zip(PHASES, seconds)},
                },
                "peak_memory_bytes": peaks[index],
                "peak_memory_kind": kind,
                "iteration_memory_bytes": added[index] if cuda else None,
                "loss_first": run.losses[0],
                "loss_last": run.losses[-1],
                "loss_finite": all(math.isfinite(v) for v in run.losses),
            }
        )
    report = {
        "setting": _setting(cfg, ctx, iterations, warmup, num_classes, compare),
        "results": results,
        "skipped": skipped,
    }
    if compare:
        report["ratios"] = {}
        for source in sources:
            rows = [r for r in results if r["source"] == source]
            report["ratios"][source] = {r["variant"]: r["images_per_s"] / rows[0]["images_per_s"] for r in rows}
    return report


def _setting(
    cfg: Config, ctx: edist.DistContext, iterations: int, warmup: int, num_classes: int, compare: bool
) -> dict:
    t, m = cfg.train, cfg.model
    device = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else _cpu_name()
    return {
        "profile": cfg.profile,
        "experiment": cfg.experiment,
        "dataset": cfg.data.dataset,
        "backbone": m.backbone,
        "head": m.head,
        "output_stride": m.output_stride,
        "classes": num_classes,
        "device": ctx.device.type,
        "device_name": device,
        "processes": ctx.world_size,
        "distributed": ctx.distributed,
        "batch_size": t.batch_size,
        "batch_per_process": t.batch_size // ctx.world_size,
        "crop_size": t.crop_size,
        "amp": t.amp,
        "channels_last": t.channels_last,
        "compile": t.compile,
        "deterministic": t.deterministic,
        "threads": torch.get_num_threads(),
        "workers": cfg.data.workers,
        "iterations": iterations,
        "warmup": warmup,
        "compare": list(COMPARE) if compare else None,
        "torch": torch.__version__,
    }


def _cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine() or "cpu"


def format_report(report: dict) -> str:
    """The setting in one line, a table of images/s, the phase split (ms/iteration) and peak memory, the
    skipped sources with their reason, and the ratios of a comparison."""
    s = report["setting"]
    lines = [
        f"emanet bench train: {s['experiment']} ({s['profile']} profile: {s['backbone']} + {s['head']}, OS "
        f"{s['output_stride']}, {s['classes']} classes) on {s['device']} ({s['device_name']}), "
        f"{s['processes']} process(es){' under DDP' if s['distributed'] else ''}, batch {s['batch_size']} "
        f"({s['batch_per_process']} per process), crop {s['crop_size']}, amp {s['amp']}, channels_last "
        f"{s['channels_last']}, compile {s['compile']}, deterministic {s['deterministic']}, {s['threads']} "
        f"threads, {s['workers']} loader workers; {s['iterations']} timed iterations after {s['warmup']} "
        f"warm-up; torch {s['torch']}",
        "",
        f"{'variant':<14} {'source':<10} {'images/s':>9} {'ms/it':>9} {'data':>8} {'forward':>8} "
        f"{'backward':>9} {'optimizer':>9} {'peak MiB':>9} {'iter MiB':>9}  loss",
    ]
    for r in report["results"]:
        ms = r["ms_per_iteration"]
        loss = f"{r['loss_first']:.4f} -> {r['loss_last']:.4f}" + ("" if r["loss_finite"] else " NOT FINITE")
        lines.append(
            f"{r['variant']:<14} {r['source']:<10} {r['images_per_s']:>9.2f} {ms['total']:>9.1f} "
            f"{ms['data']:>8.1f} {ms['forward']:>8.1f} {ms['backward']:>9.1f} {ms['optimizer']:>9.1f} "
            f"{r['peak_memory_bytes'] / 2**20:>9.0f} {_mib(r.get('iteration_memory_bytes')):>9}  {loss}"
        )
    kind = report["results"][0]["peak_memory_kind"]
    lines.append(
        "peak memory: torch.cuda.max_memory_allocated over each variant's timed iterations, the largest "
        "rank's (everything resident included: with --compare every variant's weights and optimizer state); iter: "
        "that peak less what was allocated as the iteration began"
        if kind.startswith("cuda")
        else "peak memory: the process peak resident set so far (getrusage; every variant and the model building "
        "included; rank 0's under torchrun); iter: not measured on CPU"
    )
    for skip in report["skipped"]:
        lines.append(f"{skip['source']}: skipped: {skip['reason']}")
    for source, ratios in report.get("ratios", {}).items():
        first = next(iter(ratios))
        lines.append(
            f"{source}: images/s relative to {first}: "
            + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items())
        )
    return "\n".join(lines)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def resolve_sources(choice: str) -> list[str]:
    return list(SOURCES) if choice == "both" else [choice]
