"""The report's figures as PNG: Fig. 3 and Fig. 4 analogues, training curves, per-class IoU,
qualitative predictions and the paper's Fig. 5 analogue (responsibility maps of a few bases)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from emanet.data.classes import voc_colormap  # noqa: E402
from emanet.data.transforms import MEAN, STD  # noqa: E402
from emanet.report.tables import Table  # noqa: E402


def _save(fig, path: Path) -> Path:
    import io

    from emanet.io import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def fig3(table: Table, path: Path) -> Path:
    labels = [r.label for r in table.rows]
    values = [r.cells["ss"].ours or 0.0 for r in table.rows]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.barh(range(len(values)), values, color=["#1f77b4" if "moving" in lbl else "#aaaaaa" for lbl in labels])
    ax.set_yticks(range(len(values)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("SS mIoU (%)")
    ax.set_title("Bases maintenance / normalisation (Fig. 3 analogue)")
    return _save(fig, path)


def fig4(table: Table, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in table.rows:
        xs = [int(c["key"][1:]) for c in table.columns]
        ys = [row.cells[c["key"]].ours for c in table.columns]
        ax.plot(xs, [np.nan if y is None else y for y in ys], marker="o", label=row.label)
        for c in table.columns:
            paper = row.cells[c["key"]].paper
            if isinstance(paper, int | float):
                ax.scatter([int(c["key"][1:])], [paper], marker="*", s=150, color="black", zorder=5,
                           label=f"paper, {row.label}")
    ax.set_xlabel("T_eval")
    ax.set_ylabel("SS mIoU (%)")
    ax.set_title("EM iterations: T_train x T_eval (Fig. 4 analogue)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def training_curves(runs_root: Path, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for log in sorted(runs_root.glob("*/train_log.csv")):
        with open(log, newline="") as handle:
            rows = list(csv.DictReader(handle))
        if rows:
            ax.plot([int(r["iteration"]) for r in rows], [float(r["loss"]) for r in rows], label=log.parent.name,
                    linewidth=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_title("Training curves")
    ax.legend(fontsize=6, ncol=3)
    return _save(fig, path)


def per_class(metrics_file: Path, path: Path) -> Path:
    per = json.loads(metrics_file.read_text())["per_class"]
    names = list(per)
    values = [100 * (v or 0.0) for v in per.values()]
    fig, ax = plt.subplots(figsize=(6, max(3.0, 0.22 * len(names))))
    ax.barh(range(len(names)), values)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("IoU (%)")
    ax.set_title(f"Per-class IoU, {metrics_file.parent.name}")
    return _save(fig, path)


def _denormalize(image: torch.Tensor) -> np.ndarray:
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    return (image * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def _colour(label: np.ndarray) -> np.ndarray:
    return voc_colormap()[label.astype(np.uint8)]


@torch.no_grad()
def qualitative(model, dataset, path: Path, count: int = 3) -> Path:
    from emanet.engine.evaluate import predict

    fig, axes = plt.subplots(count, 3, figsize=(7, 2.4 * count), squeeze=False)
    for row, index in enumerate(range(min(count, len(dataset)))):
        image, label = dataset[index]
        pred = predict(model, image, None, False)
        for ax, content, title in zip(axes[row], (_denormalize(image), _colour(label.numpy()),
                                                  _colour(pred.numpy())), ("image", "ground truth", "prediction")):
            ax.imshow(content)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    return _save(fig, path)


@torch.no_grad()
def responsibilities(model, image: torch.Tensor, path: Path, bases: int = 4) -> Path:
    """Fig. 5 analogue: the last E-step's responsibilities Z of the most used bases, over one image."""
    from emanet.engine.evaluate import responsibilities as responsibility_maps

    maps = responsibility_maps(model, image)
    top = maps.flatten(1).sum(1).argsort(descending=True)[:bases]
    fig, axes = plt.subplots(1, bases + 1, figsize=(2.2 * (bases + 1), 2.4))
    axes[0].imshow(_denormalize(image))
    axes[0].set_title("image", fontsize=8)
    for ax, k in zip(axes[1:], top.tolist()):
        ax.imshow(maps[k].numpy(), cmap="viridis")
        ax.set_title(f"basis {k}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.suptitle("Responsibilities Z of the most used bases (Fig. 5 analogue)", fontsize=9)
    return _save(fig, path)
