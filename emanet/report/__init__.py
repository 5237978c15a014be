"""``emanet report``: every table (Markdown, LaTeX, HTML) and figure of the paper from the run folders."""

from __future__ import annotations

import dataclasses
import html
import logging
from pathlib import Path

from emanet.config import resolve
from emanet.io import atomic_write_json, atomic_write_text
from emanet.report import figures
from emanet.report.tables import Table, build_tables, to_html, to_latex, to_markdown

log = logging.getLogger(__name__)

TINY_WARNING = ("These numbers come from the tiny profile: a small network trained for a few hundred iterations on "
                "synthetic images in the official formats. They exercise the whole pipeline and are NOT comparable "
                "to the paper's.")
_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}td.np{color:#999}"
        ".warn{background:#fee;padding:8px;border:1px solid #c00}img{max-width:100%}")


def build_report(params: dict, profile: str, results_root: Path) -> Path:
    """Write ``results_root/report/`` (tables, report.html, figures/, report.json); return report.html."""
    out = results_root / "report"
    tables = build_tables(params, results_root)
    for table in tables:
        atomic_write_text(out / f"{table.name}.md", to_markdown(table))
        atomic_write_text(out / f"{table.name}.tex", to_latex(table))
    pictures = _figures(params, profile, results_root, {t.name: t for t in tables}, out / "figures")
    atomic_write_json(out / "report.json", {"profile": profile, "tables": [_as_dict(t) for t in tables]})
    atomic_write_text(out / "report.md", (f"> {TINY_WARNING}\n\n" if profile == "tiny" else "") +
                      "\n".join(to_markdown(t) for t in tables))
    warning = f"<p class='warn'>{html.escape(TINY_WARNING)}</p>" if profile == "tiny" else ""
    images = "".join(f"<h3>{html.escape(title)}</h3><img src='figures/{p.name}'>" for title, p in pictures)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>EMANet reproduction ({profile})</title>"
            f"<style>{_CSS}</style></head><body><h1>EMANet reproduction: {profile} profile</h1>{warning}"
            "<p>Each of our numbers links to the run folder it came from (hover for the MLflow run id). "
            "Paper values carry their confidence: R official repository, A author, S secondary source. "
            "n/p: the paper published no value.</p>"
            + "".join(to_html(t) for t in tables) + f"<h2>Figures</h2>{images}</body></html>")
    return atomic_write_text(out / "report.html", page)


def _as_dict(table: Table) -> dict:
    return {"name": table.name, "title": table.title,
            "rows": [{"label": r.label, "note": r.note,
                      "cells": {k: {**dataclasses.asdict(c), "diff": c.diff} for k, c in r.cells.items()}}
                     for r in table.rows]}


def _figures(params: dict, profile: str, results_root: Path, tables: dict[str, Table], folder: Path):
    """Make every figure whose inputs exist; return (title, path) pairs."""
    made = []
    if "fig3" in tables:
        made.append(("Fig. 3 analogue: bases maintenance and normalisation", figures.fig3(tables["fig3"], folder / "fig3.png")))
    if "fig4" in tables:
        made.append(("Fig. 4 analogue: T_train x T_eval", figures.fig4(tables["fig4"], folder / "fig4.png")))
    runs = results_root / "runs"
    made.append(("Training curves", figures.training_curves(runs, folder / "training_curves.png")))
    main = runs / "ema512"
    if (main / "metrics.json").exists():
        made.append(("Per-class IoU of EMANet (512)", figures.per_class(main / "metrics.json", folder / "per_class.png")))
    if (main / "model.pt").exists():
        made += _model_figures(params, profile, main, folder)
    return made


def _model_figures(params: dict, profile: str, run_dir: Path, folder: Path):
    import torch

    from emanet.data.dataset import SegmentationDataset
    from emanet.data.transforms import EvalTransform
    from emanet.engine.evaluate import load_trained
    from emanet.engine.train import dataset_root

    cfg = resolve(params, profile, experiment="ema512")
    dataset = SegmentationDataset(dataset_root(cfg), cfg.eval.split, EvalTransform())
    model = load_trained(cfg, run_dir, dataset.num_classes, torch.device("cpu"))
    return [("Qualitative predictions of EMANet (512)", figures.qualitative(model, dataset, folder / "predictions.png")),
            ("Fig. 5 analogue: responsibility maps of the bases",
             figures.responsibilities(model, dataset[0][0], folder / "responsibilities.png"))]
