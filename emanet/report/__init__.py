"""``emanet report``: every table (Markdown, LaTeX, HTML) and figure of the paper from the run folders.

report.md and report.html say the same things in the same order: the synthetic-data warning, the
provenance header, the contents, the notes (:mod:`emanet.report.notes`, one source), then each table
with its setting, notes and figures. Each per-table .md/.tex file and figure carries the table's setting
and, for synthetic data, the mark (:mod:`emanet.report.settings`).
"""

from __future__ import annotations

import dataclasses
import html
import logging
from pathlib import Path

from emanet.config import resolve
from emanet.io import atomic_write_json, atomic_write_text
from emanet.report import figures
from emanet.report.notes import general_notes
from emanet.report.provenance import provenance, summary_lines
from emanet.report.settings import annotated_tables, describe_runs, run_params, synthetic_mark
from emanet.report.tables import Table, note_html, to_html, to_latex, to_markdown

log = logging.getLogger(__name__)

TINY_WARNING = (
    "These numbers come from the tiny profile: a small network trained for a few hundred iterations on "
    "synthetic images in the official formats. They exercise the whole pipeline and are NOT comparable "
    "to the paper's."
)
#: The run whose figures (per-class IoU, predictions, responsibilities) sit beside Table 1.
MAIN_RUN = ("table1", "ema512")
_CSS = """
body{font-family:sans-serif;max-width:1400px;margin:auto;padding:0 12px;line-height:1.35}
h2{border-bottom:1px solid #ccc;margin-top:1.6em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;white-space:nowrap}
tbody th{text-align:left;white-space:normal;min-width:12em;position:sticky;left:0;background:#fff}
td.np{color:#999}
.warn{background:#fee;padding:8px;border:1px solid #c00}
.mark{color:#b00000;font-weight:bold;font-size:13px;margin:.3em 0}
.setting{font-size:13px;color:#333;margin:.2em 0}
.prov{font-size:13px;background:#f6f6f6;padding:6px 10px;border:1px solid #ddd}
.prov p{margin:.2em 0}
nav ol{columns:2;font-size:14px}
@media (max-width:900px){nav ol{columns:1}}
ul.notes{font-size:13px}
.figs{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.figs figure{margin:0;min-width:0}
.figs img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#333}
"""


def build_report(params: dict, profile: str, results_root: Path) -> Path:
    """Write ``results_root/report/`` (tables, report.md, report.html, figures/, report.json); return report.html."""
    out = results_root / "report"
    tables = annotated_tables(params, profile, results_root)
    for table in tables:
        atomic_write_text(out / f"{table.name}.md", to_markdown(table))
        atomic_write_text(out / f"{table.name}.tex", to_latex(table))
    pictures = _figures(params, profile, results_root, tables, out / "figures")
    info = provenance(profile, results_root, tables, params)
    notes = general_notes()
    warning = TINY_WARNING if synthetic_mark(params, profile) else ""
    atomic_write_json(
        out / "report.json",
        {"profile": profile, "provenance": info, "notes": notes, "tables": [_as_dict(t) for t in tables]},
    )
    atomic_write_text(out / "report.md", _markdown(profile, warning, info, notes, tables, pictures))
    written = {out / "report.md", out / "report.json"} | {
        out / f"{t.name}{ext}" for t in tables for ext in (".md", ".tex")
    }
    _remove_stale(out, written | {p for made in pictures.values() for _, p in made})
    return atomic_write_text(out / "report.html", _html(profile, warning, info, notes, tables, pictures))


def _remove_stale(out: Path, written: set[Path]) -> None:
    """Delete the .md/.tex/.png files an earlier report left that this one did not write (a figure no longer
    made, an older name), so no unmarked or outdated file sits beside the new ones."""
    for path in [*out.glob("*.md"), *out.glob("*.tex"), *(out / "figures").glob("*.png")]:
        if path not in written:
            log.info("removing %s: not part of this report", path)
            path.unlink()


def _as_dict(table: Table) -> dict:
    return {
        "name": table.name,
        "title": table.title,
        "paper_setting": table.paper_setting,
        "setting": table.setting,
        "cost_setting": table.cost_setting,
        "mark": table.mark,
        "notes": table.notes,
        "rows": [
            {
                "label": r.label,
                "note": r.note,
                "experiment": r.experiment,
                "cells": {k: {**dataclasses.asdict(c), "diff": c.diff} for k, c in r.cells.items()},
            }
            for r in table.rows
        ],
    }


def _markdown(profile, warning, info, notes, tables, pictures) -> str:
    lines = [f"# EMANet reproduction: {profile} profile", ""]
    lines += [f"> {warning}", ""] if warning else []
    lines += [f"{line}  " for line in summary_lines(info)] + ["", "Contents:", ""]
    lines += ["- [How to read the tables](#notes)"] + [f"- [{t.title}](#{t.name})" for t in tables]
    lines += (
        ["- [Runs: commits and identities](#runs)", "", "<a id='notes'></a>", "", "## How to read the tables", ""]
        + [f"- {line}" for line in notes]
        + [""]
    )
    for table in tables:
        lines += [f"<a id='{table.name}'></a>", "", to_markdown(table)]
        lines += [f"![{title}](figures/{path.name})" for title, path in pictures.get(table.name, [])] + [""]
    lines += [
        "<a id='runs'></a>",
        "",
        "## Runs: commits and identities",
        "",
        "| run | state | trained | identity | commit | MLflow run |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['experiment']} | {r['state']} | {r['trained'] or '–'} | {r['training_identity'] or '–'} | "
        f"{(r['git_commit'] or '–')[:12]} | {r['mlflow_run_id'] or '–'} |"
        for r in info["runs"]
    ]
    return "\n".join(lines) + "\n"


def _html(profile, warning, info, notes, tables, pictures) -> str:
    esc = html.escape
    contents = (
        "<li><a href='#notes'>How to read the tables</a></li>"
        + "".join(f"<li><a href='#{t.name}'>{esc(t.title)}</a></li>" for t in tables)
        + "<li><a href='#runs'>Runs: commits and identities</a></li>"
    )
    sections = []
    for table in tables:
        figs = "".join(
            f"<figure style='{_figure_style(p)}'><a href='figures/{p.name}'><img src='figures/{p.name}' "
            f"alt='{esc(title)}'></a><figcaption>{esc(title)}</figcaption></figure>"
            for title, p in pictures.get(table.name, [])
        )
        sections.append(
            f"<section id='{table.name}'><h2>{esc(table.title)}</h2>{to_html(table)}"
            + (f"<div class='figs'>{figs}</div>" if figs else "")
            + "</section>"
        )
    runs = "".join(
        f"<tr><td>{esc(r['experiment'])}</td><td>{esc(r['state'])}</td><td>{esc(r['trained'] or '–')}</td>"
        f"<td>{esc(r['training_identity'] or '–')}</td><td>{esc((r['git_commit'] or '–')[:12])}</td>"
        f"<td>{esc(r['mlflow_run_id'] or '–')}</td></tr>"
        for r in info["runs"]
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>EMANet reproduction ({esc(profile)})</title><style>{_CSS}</style></head><body>"
        f"<h1>EMANet reproduction: {esc(profile)} profile</h1>"
        + (f"<p class='warn'>{esc(warning)}</p>" if warning else "")
        + "<div class='prov'>"
        + "".join(f"<p>{esc(line)}</p>" for line in summary_lines(info))
        + "</div>"
        f"<nav><h2>Contents</h2><ol>{contents}</ol></nav>"
        "<section id='notes'><h2>How to read the tables</h2><ul class='notes'>"
        + "".join(f"<li>{note_html(line)}</li>" for line in notes)
        + "</ul></section>"
        + "".join(sections)
        + "<section id='runs'><h2>Runs: commits and identities</h2><div class='scroll'><table class='runs'>"
        "<thead><tr>"
        "<th>run</th><th>state</th><th>trained</th><th>identity</th><th>commit</th><th>MLflow run</th></tr></thead>"
        f"<tbody>{runs}</tbody></table></div></section></body></html>"
    )


def _figure_style(path: Path) -> str:
    """Flex sizing from the PNG's own width: wide figures get a wide slot, none is enlarged past its size."""
    from PIL import Image

    with Image.open(path) as image:
        width = image.width
    return f"flex:1 1 {int(width * 0.6)}px;max-width:{width}px"


def _figures(
    params: dict, profile: str, results_root: Path, tables: list[Table], folder: Path
) -> dict[str, list[tuple[str, Path]]]:
    """Make every figure whose inputs exist; return {table name: [(caption, path), ...]}."""
    made: dict[str, list[tuple[str, Path]]] = {t.name: [] for t in tables}
    mark = synthetic_mark(params, profile)
    by_name = {t.name: t for t in tables}
    runs = results_root / "runs"
    if "fig3" in by_name:
        made["fig3"].append(
            (
                "Fig. 3 analogue: bases maintenance (bar colour) and normalisation",
                figures.fig3(by_name["fig3"], folder / "fig3.png", mark, by_name["fig3"].setting),
            )
        )
    if "fig4" in by_name:
        made["fig4"].append(
            (
                "Fig. 4 analogue: T_train x T_eval",
                figures.fig4(by_name["fig4"], folder / "fig4.png", mark, by_name["fig4"].setting),
            )
        )
    for table in tables:
        curves = {r.label: r.experiment for r in table.rows if r.experiment}
        path = (
            figures.training_curves(
                runs,
                folder / f"training_{table.name}.png",
                curves,
                f"Training curves: {table.title}",
                mark,
                table.setting,
            )
            if curves
            else None
        )
        if path is not None:
            made[table.name].append(("Training loss of this table's runs", path))
    home, experiment = MAIN_RUN
    if home not in made:
        return made
    label = next((r.label for r in by_name[home].rows if r.experiment == experiment), experiment)
    setting = describe_runs({label: run_params(params, profile, results_root, experiment)})
    metrics = runs / experiment / "metrics.json"
    if metrics.exists():
        made[home].append(
            (
                f"Per-class IoU of {label} (label order; absent classes marked)",
                figures.per_class(
                    metrics, folder / "per_class.png", _class_names(params, profile, experiment), mark, setting
                ),
            )
        )
    if (runs / experiment / "model.pt").exists():
        made[home] += _model_figures(params, profile, runs / experiment, folder, label, mark, setting)
    return made


def _class_names(params: dict, profile: str, experiment: str) -> list[str] | None:
    """The evaluated dataset's classes in label order (its meta.json), or VOC's for a VOC run not prepared here."""
    from emanet.data.classes import VOC_CLASSES
    from emanet.data.convert.prepare import read_meta
    from emanet.data.convert.sources import DataError

    cfg = resolve(params, profile, experiment=experiment)
    dataset = cfg.eval.dataset or cfg.data.dataset
    try:
        return list(read_meta(Path(cfg.data.root) / dataset)["classes"])
    except DataError:
        return list(VOC_CLASSES) if dataset in ("voc", "coco_voc", "voc_test") else None


def _model_figures(params: dict, profile: str, run_dir: Path, folder: Path, label: str, mark: str, setting: str):
    import torch

    from emanet.data.loading.dataset import SegmentationDataset
    from emanet.data.loading.transforms import EvalTransform
    from emanet.engine.evaluate import load_trained
    from emanet.engine.train import dataset_root

    cfg = resolve(params, profile, experiment=run_dir.name)
    dataset = SegmentationDataset(dataset_root(cfg), cfg.eval.split, EvalTransform())
    model = load_trained(cfg, run_dir, dataset.num_classes, torch.device("cpu"))
    images = [(dataset.ids[i], dataset[i][0]) for i in range(min(2, len(dataset)))]
    return [
        (
            f"Predictions of {label}, {cfg.eval.split} images by id",
            figures.qualitative(model, dataset, folder / "predictions.png", run_dir.name, mark=mark, setting=setting),
        ),
        (
            "Fig. 5 analogue: responsibility maps of distinct bases, one colour scale",
            figures.responsibilities(model, images, folder / "responsibilities.png", mark=mark, setting=setting),
        ),
    ]
