"""The report's figures as PNG: Fig. 3 and Fig. 4 analogues, training curves, per-class IoU,
qualitative predictions and the paper's Fig. 5 analogue (responsibility maps of a few bases).

Every figure states the setting it was made with (a footer) and, for synthetic data, carries the mark
three ways: a title suffix, a diagonal watermark, and the PNG text chunk ``Warning`` (the setting is in
``Description``). A figure of real data has no ``Warning`` chunk.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from emanet.data.classes import voc_colormap  # noqa: E402
from emanet.data.loading.transforms import MEAN, STD  # noqa: E402
from emanet.io import atomic_write_bytes  # noqa: E402
from emanet.report.tables import Table  # noqa: E402

#: Distinct colours for up to 20 lines (tab10, then tab20's light shades).
_COLOURS = list(plt.get_cmap("tab10").colors) + list(plt.get_cmap("tab20").colors[1::2])


def png_text(path: Path) -> dict[str, str]:
    """The text chunks of a PNG written here (``Title``, ``Description``, ``Warning``, ``Software``)."""
    from PIL import Image

    with Image.open(path) as image:
        return dict(image.text)


def _save(fig, path: Path, title: str, mark: str = "", setting: str = "") -> Path:
    """Title (with the mark's suffix), setting footer, watermark and PNG text; written atomically."""
    width = fig.get_figwidth()
    short = mark.split(":")[0] if mark else ""
    fig.suptitle(title + (f"\n[{short}]" if short else ""), fontsize=10, color="#b00000" if mark else "black")
    if setting:  # below everything drawn so far (axis labels, legends under the axes)
        footer = textwrap.fill(f"Setting: {setting}", width=int(width * 17))
        bottom = fig.get_tightbbox(fig.canvas.get_renderer()).y0 / fig.get_figheight()
        fig.text(0.01, bottom - 0.01, footer, fontsize=7, va="top", ha="left", color="#333333")
    if mark:
        fig.text(
            0.5,
            0.5,
            short,
            fontsize=min(30.0, 75 * width / len(short)),
            color="#d00000",
            alpha=0.15,
            rotation=20,
            ha="center",
            va="center",
            zorder=100,
        )
    metadata = {"Title": title, "Software": "emanet report"}
    if setting:
        metadata["Description"] = setting
    if mark:
        metadata["Warning"] = mark
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata=metadata)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _maintenance(label: str) -> str:
    return label.split(" / ")[0]


def fig3(table: Table, path: Path, mark: str = "", setting: str = "") -> Path:
    """SS mIoU per maintenance / normalisation pair; colour = how the bases are maintained."""
    labels = [r.label for r in table.rows]
    values = [r.cells["ss"].ours for r in table.rows]
    kinds = list(dict.fromkeys(_maintenance(lbl) for lbl in labels))
    colour = {kind: _COLOURS[i] for i, kind in enumerate(kinds)}
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(labels) + 1.6))
    ax.barh(range(len(values)), [v or 0.0 for v in values], color=[colour[_maintenance(lbl)] for lbl in labels])
    for i, value in enumerate(values):
        if value is None:
            ax.text(0, i, " missing (no metrics file)", va="center", fontsize=7, color="#666666")
        else:
            ax.text(value, i, f" {value:.1f}", va="center", fontsize=7)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("SS mIoU (%)")
    ax.set_xlim(0, max([v for v in values if v is not None], default=1.0) * 1.12)
    ax.legend(
        handles=[Patch(color=colour[k], label=k) for k in kinds],
        title="bar colour: bases maintained by",
        fontsize=7,
        title_fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    return _save(fig, path, "Fig. 3 analogue: maintenance / normalisation of the bases", mark, setting)


def fig4(table: Table, path: Path, mark: str = "", setting: str = "") -> Path:
    """SS mIoU over T_eval, one line per T_train (table order); the paper's points as stars, or, when
    outside our values' range, as an arrow at the axis edge with the value written beside it."""
    xs = [int(c["key"][1:]) for c in table.columns]
    ours = [v for row in table.rows for c in table.columns if (v := row.cells[c["key"]].ours) is not None]
    low, high = (min(ours), max(ours)) if ours else (0.0, 100.0)
    pad = max(0.5, 0.08 * (high - low))
    low, high = low - pad, high + pad
    fig, ax = plt.subplots(figsize=(7, 4.2))
    handles = []
    for i, row in enumerate(table.rows):
        ys = [row.cells[c["key"]].ours for c in table.columns]
        (line,) = ax.plot(xs, [np.nan if y is None else y for y in ys], marker="o", color=_COLOURS[i], label=row.label)
        handles.append(line)
    star = None
    for i, row in enumerate(table.rows):
        for x, c in zip(xs, table.columns, strict=True):
            paper = row.cells[c["key"]].paper
            if not isinstance(paper, int | float):
                continue
            if low <= paper <= high:
                star = ax.scatter([x], [paper], marker="*", s=160, color=_COLOURS[i], edgecolor="black", zorder=5)
            else:
                edge = high if paper > high else low
                star = ax.scatter(
                    [x],
                    [edge],
                    marker="^" if paper > high else "v",
                    s=90,
                    color=_COLOURS[i],
                    edgecolor="black",
                    zorder=5,
                    clip_on=False,
                )
                ax.annotate(
                    f"paper {paper:.2f} ({row.label}, T_eval={x}): off scale",
                    (x, edge),
                    xytext=(6, -12 if paper > high else 8),
                    textcoords="offset points",
                    fontsize=7,
                )
    ax.set_ylim(low, high)
    ax.set_xticks(xs)
    ax.set_xlabel("T_eval (EM iterations at evaluation)")
    ax.set_ylabel("SS mIoU (%)")
    labels = [h.get_label() for h in handles]
    if star is not None:
        handles.append(star)
        labels.append("paper (★ in range, ▲▼ off scale)")
    ax.legend(handles, labels, fontsize=7, loc="best")
    return _save(fig, path, "Fig. 4 analogue: EM iterations, T_train (lines) x T_eval", mark, setting)


def training_curves(
    runs_root: Path,
    path: Path,
    runs: dict[str, str] | None = None,
    title: str = "Training curves",
    mark: str = "",
    setting: str = "",
) -> Path | None:
    """Training loss over iterations of ``runs`` ({legend label: run folder name}; default every run
    folder), one colour each; None when none of them has a train_log.csv."""
    runs = (
        runs if runs is not None else {p.parent.name: p.parent.name for p in sorted(runs_root.glob("*/train_log.csv"))}
    )
    curves = {}
    for label, name in runs.items():
        log = runs_root / name / "train_log.csv"
        if log.exists():
            with open(log, newline="") as handle:
                rows = list(csv.DictReader(handle))
            if rows:
                curves[label] = ([int(r["iteration"]) for r in rows], [float(r["loss"]) for r in rows])
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, (label, (its, losses)) in enumerate(curves.items()):
        ax.plot(
            its,
            losses,
            label=label,
            linewidth=1.2,
            color=_COLOURS[i % len(_COLOURS)],
            linestyle="-" if i < len(_COLOURS) else "--",
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7, ncol=2 if len(curves) > 5 else 1, loc="upper right")
    return _save(fig, path, title, mark, setting)


def per_class(
    metrics_file: Path, path: Path, classes: list[str] | None = None, mark: str = "", setting: str = ""
) -> Path:
    """IoU per class in label order (``classes``, the dataset's meta.json; default the file's order), the
    value written at each bar.

    A class absent from the split's ground truth gets no bar: "absent (no pixels)" when nothing was
    predicted either (IoU null in metrics.json), "no ground-truth pixels, N predicted" when the
    confusion matrix (rows = ground truth) shows only false positives, which score 0 IoU in the mIoU.
    """
    metrics = json.loads(metrics_file.read_text())
    per = metrics["per_class"]
    names = list(classes) if classes else list(per)
    unknown = set(per) - set(names)
    if unknown:
        raise ValueError(f"{metrics_file}: per_class names {sorted(unknown)[:3]} are not classes of the dataset")
    values = [per.get(name) for name in names]
    matrix = np.asarray(metrics["confusion_matrix"]) if "confusion_matrix" in metrics else None
    if matrix is not None and matrix.shape != (len(names), len(names)):
        matrix = None  # another class list: the per-class values alone
    fig, ax = plt.subplots(figsize=(6.5, max(3.0, 0.22 * len(names) + 1.2)))
    for i, value in enumerate(values):
        truth = None if matrix is None else int(matrix[i].sum())
        if value is None:
            ax.text(0.5, i, "absent (no pixels)", va="center", fontsize=6, color="#888888", style="italic")
        elif truth == 0:
            ax.text(
                0.5,
                i,
                f"no ground-truth pixels, {int(matrix[:, i].sum())} predicted (IoU 0 in the mIoU)",
                va="center",
                fontsize=6,
                color="#888888",
                style="italic",
            )
        else:
            ax.barh([i], [100 * value], color="#1f77b4")
            ax.text(100 * value + 0.5, i, f"{100 * value:.1f}", va="center", fontsize=6)
    ax.set_yticks(range(len(names)), [f"{i} {name}" for i, name in enumerate(names)], fontsize=7)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlim(0, 108)
    ax.set_xlabel("IoU (%)")
    return _save(fig, path, f"Per-class IoU, {metrics_file.parent.name} (label order)", mark, setting)


def _denormalize(image: torch.Tensor) -> np.ndarray:
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    return (image * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def _colour(label: np.ndarray) -> np.ndarray:
    return voc_colormap()[label.astype(np.uint8)]


@torch.no_grad()
def qualitative(model, dataset, path: Path, run: str, count: int = 3, mark: str = "", setting: str = "") -> Path:
    """Image, ground truth and single-scale prediction of the first ``count`` images by the model of run
    ``run`` (named in the title, so the PNG on its own says whose predictions it shows), titled with their
    ids, with a legend of the classes they show (white: ignored pixels)."""
    from emanet.engine.evaluate import predict

    shown = min(count, len(dataset))
    fig, axes = plt.subplots(shown, 3, figsize=(7, 2.4 * shown), squeeze=False)
    seen: set[int] = set()
    names = dataset.meta["classes"]
    for row in range(shown):
        image, label = dataset[row]
        pred = predict(model, image, None, False)
        seen |= set(np.unique(label.numpy()).tolist()) | set(np.unique(pred.numpy()).tolist())
        image_id = dataset.ids[row]
        for ax, content, title in zip(
            axes[row],
            (_denormalize(image), _colour(label.numpy()), _colour(pred.numpy())),
            (f"{image_id}: image", "ground truth", "prediction"),
            strict=True,
        ):
            ax.imshow(content)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    colours = voc_colormap() / 255.0
    handles = [
        Patch(facecolor=colours[c], edgecolor="#999999", label=f"{c} {names[c]}")
        for c in sorted(seen)
        if c < len(names)
    ]
    if any(c >= len(names) for c in seen):
        handles.append(Patch(facecolor=colours[255], edgecolor="#999999", label="255 ignored"))
    fig.legend(
        handles=handles,
        loc="upper center",
        ncol=min(5, len(handles)),
        fontsize=7,
        bbox_to_anchor=(0.5, 0.03),
        title="colours: class (label index)",
        title_fontsize=7,
    )
    return _save(fig, path, f"Qualitative predictions of {run} (single scale)", mark, setting)


def _distinct_bases(maps: torch.Tensor, count: int, alike: float = 0.95) -> list[int]:
    """The most used bases, skipping one whose map is nearly a copy (cosine > ``alike``) of one chosen."""
    flat = maps.flatten(1)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    chosen: list[int] = []
    order = flat.sum(1).argsort(descending=True).tolist()
    for k in order:
        if all(float(unit[k] @ unit[j]) <= alike for j in chosen):
            chosen.append(k)
        if len(chosen) == count:
            return chosen
    return chosen + [k for k in order if k not in chosen][: count - len(chosen)]


@torch.no_grad()
def responsibilities(
    model, images: list[tuple[str, torch.Tensor]], path: Path, bases: int = 4, mark: str = "", setting: str = ""
) -> Path:
    """Fig. 5 analogue: the last E-step's responsibilities Z (0..1) of the most used, mutually distinct
    bases, one row per (image id, normalised image), on one colour scale with a colour bar."""
    from emanet.engine.evaluate import responsibilities as responsibility_maps

    maps = [responsibility_maps(model, image) for _, image in images]
    chosen = _distinct_bases(torch.cat([m.flatten(1) for m in maps], dim=1), bases)
    vmax = max(float(m[chosen].max()) for m in maps)
    fig, axes = plt.subplots(
        len(images), len(chosen) + 1, figsize=(2.2 * (len(chosen) + 1) + 0.6, 2.3 * len(images)), squeeze=False
    )
    shown = None
    for row, ((image_id, image), m) in enumerate(zip(images, maps, strict=True)):
        axes[row][0].imshow(_denormalize(image))
        axes[row][0].set_title(image_id, fontsize=8)
        for ax, k in zip(axes[row][1:], chosen, strict=True):
            shown = ax.imshow(m[k].numpy(), cmap="viridis", vmin=0.0, vmax=vmax)
            ax.set_title(f"basis {k}", fontsize=8)
        for ax in axes[row]:
            ax.axis("off")
    fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.8, label="responsibility Z (shared scale)")
    return _save(fig, path, "Responsibilities Z of the most used distinct bases (Fig. 5 analogue)", mark, setting)
