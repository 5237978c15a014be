"""The report's figures as PNG, from tables and run folders only (no model is built here): bars and lines of a
table (the paper's Fig. 3 and Fig. 4 analogues), training curves, per-class IoU, and from a run's
``samples.npz`` (:mod:`emanet.engine.samples`, written by ``emanet evaluate``) its qualitative predictions and
the paper's Fig. 5 analogue (responsibility maps of a few bases). params.yaml's ``figures`` declares which
(:mod:`emanet.plan.figures`).

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
from matplotlib.patches import Patch  # noqa: E402

from emanet.data.classes import voc_colormap  # noqa: E402
from emanet.io import atomic_write_bytes  # noqa: E402
from emanet.protocols import Protocol  # noqa: E402
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


def bars(
    table: Table,
    column: str,
    path: Path,
    title: str,
    groups: list[str] | None = None,
    legend: str = "",
    mark: str = "",
    setting: str = "",
) -> Path:
    """One horizontal bar per row of ``table``: its value in column ``column`` (a key; the axis says the
    column's label), a missing value said as such. ``groups``: each row's group (e.g. how its run maintains
    the bases), one colour per group in order of appearance, listed in a legend titled ``legend``; None: one
    colour, no legend."""
    labels = [r.label for r in table.rows]
    values = [r.cells[column].ours for r in table.rows]
    axis = next(c["label"] for c in table.columns if c["key"] == column)
    kinds = list(dict.fromkeys(groups)) if groups else []
    colour = {kind: _COLOURS[i % len(_COLOURS)] for i, kind in enumerate(kinds)}
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(labels) + 1.6))
    ax.barh(
        range(len(values)),
        [v or 0.0 for v in values],
        color=[colour[g] for g in groups] if groups else _COLOURS[0],
    )
    for i, value in enumerate(values):
        if value is None:
            ax.text(0, i, " missing (no metrics file)", va="center", fontsize=7, color="#666666")
        else:
            ax.text(value, i, f" {value:.1f}", va="center", fontsize=7)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(axis)
    ax.set_xlim(0, max([v for v in values if v is not None], default=1.0) * 1.12)
    if kinds:
        ax.legend(
            handles=[Patch(color=colour[k], label=k) for k in kinds],
            title=legend,
            fontsize=7,
            title_fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
        )
    return _save(fig, path, title, mark, setting)


def lines(table: Table, path: Path, title: str, mark: str = "", setting: str = "") -> Path:
    """mIoU over T_eval (each column's protocol, ``ss_T<n>``: x = n), one line per row (table order, e.g. one
    per T_train); the paper's points as stars, or, when outside our values' range, as an arrow at the axis
    edge with the value written beside it. Raises ValueError for a column without an evaluation T."""
    protocols = [Protocol.parse(c["source"].partition(":")[2]) for c in table.columns]
    if any(p.stages is None for p in protocols):
        raise ValueError(f"tables.{table.name}: a lines figure needs metric:<protocol>_T<n> columns only")
    xs = [p.stages for p in protocols]
    multi_scale = protocols[0].multi_scale
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
    ax.set_ylabel("MS+Flip mIoU (%)" if multi_scale else "SS mIoU (%)")
    labels = [h.get_label() for h in handles]
    if star is not None:
        handles.append(star)
        labels.append("paper (★ in range, ▲▼ off scale)")
    ax.legend(handles, labels, fontsize=7, loc="best")
    return _save(fig, path, title, mark, setting)


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
    metrics_file: Path,
    path: Path,
    classes: list[str] | None = None,
    mark: str = "",
    setting: str = "",
    title: str | None = None,
) -> Path:
    """IoU per class in label order (``classes``, the dataset's class list; default the file's order), the
    value written at each bar. ``title``: default "Per-class IoU, <run folder> (label order)".

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
    return _save(fig, path, title or f"Per-class IoU, {metrics_file.parent.name} (label order)", mark, setting)


def _colour(label: np.ndarray) -> np.ndarray:
    return voc_colormap()[label.astype(np.uint8)]


def read_samples(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a run's ``samples.npz`` (:mod:`emanet.engine.samples` lists them), read without pickles.
    Raises ValueError naming the file when it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{path}: not a readable samples file ({error}); run `emanet evaluate` again") from None


def qualitative(samples: dict[str, np.ndarray], path: Path, title: str, mark: str = "", setting: str = "") -> Path:
    """Image, ground truth and single-scale prediction of each image of a run's ``samples`` (:func:`read_samples`),
    titled with their ids, with a legend of the classes they show (white: ignored pixels). ``title`` should name
    the run, so the PNG on its own says whose predictions it shows."""
    ids = [str(i) for i in samples["ids"]]
    names = [str(c) for c in samples["classes"]]
    fig, axes = plt.subplots(len(ids), 3, figsize=(7, 2.4 * len(ids)), squeeze=False)
    seen: set[int] = set()
    for row, image_id in enumerate(ids):
        label, pred = samples.get(f"label_{row}"), samples[f"prediction_{row}"]
        seen |= set(np.unique(pred).tolist()) | (set() if label is None else set(np.unique(label).tolist()))
        for ax, content, caption in zip(
            axes[row],
            (samples[f"image_{row}"], None if label is None else _colour(label), _colour(pred)),
            (f"{image_id}: image", "ground truth" if label is not None else "no ground truth", "prediction"),
            strict=True,
        ):
            if content is not None:
                ax.imshow(content)
            ax.set_title(caption, fontsize=8)
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
    return _save(fig, path, title, mark, setting)


def responsibilities(samples: dict[str, np.ndarray], path: Path, title: str, mark: str = "", setting: str = "") -> Path:
    """Fig. 5 analogue: the last E-step's responsibilities Z (0..1) of the bases a run's ``samples`` keep (the
    most used, mutually distinct ones), one row per image (its id, the image, then one map per basis), on one
    colour scale with a colour bar. Raises ValueError when the samples hold none (a model without an EMA head)."""
    if "bases" not in samples:
        raise ValueError("these samples hold no responsibility maps: the run's model has no EMA head")
    chosen = [int(k) for k in samples["bases"]]
    maps = [samples[f"responsibilities_{j}"] for j in range(len(samples["ids"])) if f"responsibilities_{j}" in samples]
    vmax = max(float(m.max()) for m in maps)
    fig, axes = plt.subplots(
        len(maps), len(chosen) + 1, figsize=(2.2 * (len(chosen) + 1) + 0.6, 2.3 * len(maps)), squeeze=False
    )
    shown = None
    for row, m in enumerate(maps):
        axes[row][0].imshow(samples[f"image_{row}"])
        axes[row][0].set_title(str(samples["ids"][row]), fontsize=8)
        for ax, k, basis in zip(axes[row][1:], chosen, m, strict=True):
            shown = ax.imshow(basis, cmap="viridis", vmin=0.0, vmax=vmax)
            ax.set_title(f"basis {k}", fontsize=8)
        for ax in axes[row]:
            ax.axis("off")
    fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.8, label="responsibility Z (shared scale)")
    return _save(fig, path, title, mark, setting)
