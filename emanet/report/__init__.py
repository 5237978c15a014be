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

from emanet.io import atomic_write_json, atomic_write_text
from emanet.plan.figures import DEFAULT_TEXT, RUN_KINDS
from emanet.report import figures
from emanet.report.notes import general_notes
from emanet.report.provenance import provenance, summary_lines
from emanet.report.settings import annotated_tables, describe_runs, run_params, synthetic_mark
from emanet.report.tables import Table, note_html, to_html, to_latex, to_markdown
from emanet.runs.folder import SAMPLES, metrics_path
from emanet.runs.folder import run_dir as runs_folder

log = logging.getLogger(__name__)

TINY_WARNING = (
    "These numbers come from the tiny profile: a small network trained for a few hundred iterations on "
    "synthetic images in the official formats. They exercise the whole pipeline and are NOT comparable "
    "to the paper's."
)
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
    """Make every figure whose inputs exist; return {table name: [(caption, path), ...]}.

    Beside each table: its declared table figures (params.yaml's ``figures``, kinds bars and lines), its
    training curves, then its declared run figures (per_class, predictions, responsibilities), each in the
    order declared. A run figure is skipped (logged) while its run has no metrics file or ``samples.npz``.
    """
    made: dict[str, list[tuple[str, Path]]] = {t.name: [] for t in tables}
    mark = synthetic_mark(params, profile)
    by_name = {t.name: t for t in tables}
    runs = results_root / "runs"
    declared = [(name, spec) for name, spec in (params.get("figures") or {}).items() if spec["table"] in by_name]
    for name, spec in declared:
        if spec["kind"] not in RUN_KINDS:
            made[spec["table"]] += _table_figure(
                name, spec, by_name[spec["table"]], params, profile, results_root, folder, mark
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
    for name, spec in declared:
        if spec["kind"] in RUN_KINDS:
            made[spec["table"]] += _run_figure(
                name, spec, by_name[spec["table"]], params, profile, results_root, folder, mark
            )
    return made


def _table_figure(name, spec, table, params, profile, results_root, folder, mark) -> list[tuple[str, Path]]:
    """A bars or lines figure of ``table`` (params.yaml's ``figures.<name>``): [(caption, path)]."""
    title, caption = spec.get("title", table.title), spec.get("caption", table.title)
    path = folder / f"{name}.png"
    if spec["kind"] == "lines":
        return [(caption, figures.lines(table, path, title, mark, table.setting))]
    groups = None
    if spec.get("group_by"):
        names = spec.get("groups") or {}
        values = [
            run_params(params, profile, results_root, row.experiment).get(spec["group_by"]) if row.experiment else None
            for row in table.rows
        ]
        groups = [str(names.get(value, value)) for value in values]
    drawn = figures.bars(table, spec["column"], path, title, groups, spec.get("legend", ""), mark, table.setting)
    return [(caption, drawn)]


def _run_figure(name, spec, table, params, profile, results_root, folder, mark) -> list[tuple[str, Path]]:
    """A figure of one run (params.yaml's ``figures.<name>``: per_class from its metrics file, predictions and
    responsibilities from its ``samples.npz``): [(caption, path)], or [] while its inputs are missing."""
    kind, experiment = spec["kind"], spec["experiment"]
    run_dir = runs_folder(results_root, experiment)
    label = next((r.label for r in table.rows if r.experiment == experiment), experiment)
    evaluated = [spec.get("protocol", "ss")]  # the protocol the figure draws (per_class) or samples.npz's (ss)
    setting = describe_runs({label: run_params(params, profile, results_root, experiment, evaluated)})
    samples_file = run_dir / SAMPLES
    samples = figures.read_samples(samples_file) if samples_file.is_file() else None
    split = (
        str(samples["split"])
        if samples is not None
        else run_params(params, profile, results_root, experiment, evaluated).get("eval.split")
    )
    default_title, default_caption = DEFAULT_TEXT[kind]
    words = {"label": label, "experiment": experiment, "split": split}
    title = spec.get("title", default_title).format(**words)
    caption = spec.get("caption", default_caption).format(**words)
    path = folder / f"{name}.png"
    if kind == "per_class":
        protocol = spec.get("protocol", "ss")
        metrics = metrics_path(run_dir, protocol)
        if not metrics.is_file():
            log.info("figure %s: %s not made yet", name, metrics)
            return []
        classes = [str(c) for c in samples["classes"]] if samples is not None else _class_names(metrics)
        return [(caption, figures.per_class(metrics, path, classes, mark, setting, title))]
    if samples is None:
        log.info("figure %s: %s not made yet (`emanet evaluate` writes it)", name, samples_file)
        return []
    if kind == "predictions":
        return [(caption, figures.qualitative(samples, path, title, mark, setting))]
    if "bases" not in samples:
        log.warning("figure %s: %s holds no responsibility maps (the run's model has no EMA head)", name, samples_file)
        return []
    return [(caption, figures.responsibilities(samples, path, title, mark, setting))]


def _class_names(metrics: Path) -> list[str] | None:
    """VOC's classes in label order for a VOC run whose samples.npz (which names its classes) is not made yet,
    else None (the metrics file's order): metrics.json lists its classes sorted by name."""
    from emanet.data.classes import VOC_CLASSES
    from emanet.io import read_json_object

    dataset = read_json_object(metrics).get("dataset")
    return list(VOC_CLASSES) if dataset in ("voc", "coco_voc", "voc_test") else None
