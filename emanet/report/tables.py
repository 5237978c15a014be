"""The paper's tables from params.yaml's ``tables`` and the run folders: ours beside the paper's.

Each cell holds our value (with the run folder and MLflow run id it came from), the paper's value with
its confidence, and the difference where both are numbers. Rendered as Markdown, LaTeX and HTML.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from emanet.pipeline import validate_tables

NOT_PUBLISHED = "n/p"
#: Beside a value whose run holds imported weights (`emanet import-weights`), not weights trained here.
IMPORTED = "(imported)"


@dataclass
class Cell:
    ours: float | None = None        # metric in % or a cost as a number
    text: str = ""                   # formatted value of ours
    paper: str | float | None = None
    confidence: str | None = None
    source: str | None = None        # run folder (or bench file) the value came from
    mlflow_run: str | None = None
    missing: str | None = None       # why ours is absent

    @property
    def diff(self) -> float | None:
        if self.ours is None or not isinstance(self.paper, int | float):
            return None
        return self.ours - float(self.paper)


@dataclass
class Row:
    label: str
    cells: dict[str, Cell] = field(default_factory=dict)
    note: str | None = None


@dataclass
class Table:
    name: str
    title: str
    columns: list[dict]
    rows: list[Row]


def _format_cost(field_name: str, value: float, head: bool) -> str:
    plus = "+" if head else ""
    if field_name == "macs":
        return f"{plus}{value / 1e9:.1f}G"
    if field_name == "params":
        return f"{plus}{value / 1e6:.2f}M"
    # Table 1 appears to give the backbone's memory in bytes and the heads' in fp32 elements (bench.py)
    return f"{plus}{value / 4e6:.1f}M" if head else f"{value / 1e9:.3f}G"


def _metric_cell(run_dir: Path, protocol: str) -> Cell:
    path = run_dir / ("metrics.json" if protocol == "ss" else f"metrics_{protocol}.json")
    package = run_dir / f"submission_{protocol}.json"
    packaged = json.loads(package.read_text()) if package.exists() else None
    if not path.exists():
        if packaged:  # a test split: the score comes from the evaluation server
            return Cell(text="awaiting server", source=str(run_dir),
                        missing=f"upload {packaged['submission']} to {packaged['server']}, then `emanet submission "
                                f"record --experiment {run_dir.name} --protocol {protocol} --miou ...`")
        return Cell(missing=f"{path} not found")
    metrics = json.loads(path.read_text())
    if packaged and metrics.get("submission_sha256") != packaged["submission_sha256"]:
        return Cell(text="stale", source=str(run_dir),
                    missing=f"{path} scores an earlier package than {packaged['submission']}: submit it again")
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    value = 100.0 * metrics["miou"]
    return Cell(ours=value, text=_value_text(value, bool(info.get("imported"))), source=str(run_dir),
                mlflow_run=info.get("mlflow_run_id"))


def _value_text(value: float, imported: bool) -> str:
    """A metric in %, marked "(imported)" when the run's weights were imported, not trained here."""
    return f"{value:.2f}" + (f" {IMPORTED}" if imported else "")


def _cost_cell(complexity: dict | None, key: str | None, field_name: str, bench_file: Path) -> Cell:
    if key is None:
        return Cell()
    if complexity is None:
        return Cell(missing=f"{bench_file} not found")
    head = key != "backbone"
    cost = complexity["heads"][key] if head else complexity["backbone"]
    value = cost[field_name]
    return Cell(ours=None, text=_format_cost(field_name, value, head), source=str(bench_file))


def mlflow_cell(runs: dict[str, dict], experiment: str, protocol: str) -> Cell:
    """A metric cell from :func:`emanet.tracking.metrics_from_mlflow`'s summary."""
    run = runs.get(experiment)
    if run is None or protocol not in run:
        return Cell(missing=f"no finished MLflow run of {experiment} with {protocol}/miou")
    value = 100.0 * run[protocol]
    return Cell(ours=value, text=_value_text(value, bool(run.get("imported"))), mlflow_run=run["run_id"])


def build_tables(params: dict, results_root: Path, mlflow_runs: dict[str, dict] | None = None) -> list[Table]:
    """Fill every table of params.yaml from ``results_root/runs/*`` and ``results_root/bench``, or, with
    ``mlflow_runs``, the metric cells from MLflow alone."""
    validate_tables(params)
    bench_file = results_root / "bench" / "complexity.json"
    complexity = json.loads(bench_file.read_text()) if bench_file.exists() else None
    tables = []
    for name, spec in params["tables"].items():
        rows = []
        for row_spec in spec["rows"]:
            row = Row(row_spec["label"], note=row_spec.get("note"))
            for column in spec["columns"]:
                kind, _, value = column["source"].partition(":")
                if kind == "metric":
                    experiment = row_spec.get("experiment")
                    if not experiment:
                        cell = Cell()
                    elif mlflow_runs is not None:
                        cell = mlflow_cell(mlflow_runs, experiment, value)
                    else:
                        cell = _metric_cell(results_root / "runs" / experiment, value)
                else:
                    cell = _cost_cell(complexity, row_spec.get("cost"), value, bench_file)
                cell.paper = (row_spec.get("paper") or {}).get(column["key"])
                cell.confidence = row_spec.get("confidence") if cell.paper is not None else None
                row.cells[column["key"]] = cell
            rows.append(row)
        tables.append(Table(name, spec["title"], spec["columns"], rows))
    return tables


def _paper_text(cell: Cell) -> str:
    if cell.paper is None:
        return NOT_PUBLISHED
    value = f"{cell.paper:.2f}" if isinstance(cell.paper, float) else str(cell.paper)
    return f"{value} [{cell.confidence}]" if cell.confidence else value


def _ours_text(cell: Cell) -> str:
    if cell.text:
        return cell.text
    return "missing" if cell.missing else "–"


def _pending(table: Table) -> list[str]:
    """What to do for cells that wait on someone (the evaluation server): one line per cell."""
    return [f"{row.label}, {column['label']}: {cell.missing}" for row in table.rows for column in table.columns
            if (cell := row.cells[column["key"]]).text and cell.missing]


def to_markdown(table: Table) -> str:
    header = ["Method"] + [f"{c['label']} ours / paper" for c in table.columns]
    lines = [f"### {table.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        cells = []
        for column in table.columns:
            cell = row.cells[column["key"]]
            diff = f" ({cell.diff:+.2f})" if cell.diff is not None else ""
            cells.append(f"{_ours_text(cell)} / {_paper_text(cell)}{diff}")
        label = row.label + (f" ({row.note})" if row.note else "")
        lines.append("| " + " | ".join([label] + cells) + " |")
    lines += ["", "n/p: not published by the paper. [R]/[A]/[S]/[U]: confidence of the paper's value "
                  "(shared/reference/paper.md §0). Differences are ours minus the paper's, in mIoU points."]
    lines += [f"- {line}" for line in _pending(table)]
    if any(c["source"] == "cost:activation_bytes" for c in table.columns):
        lines.append("Memory: backbone in bytes, head overheads in millions of fp32 activations, the units Table 1 "
                     "appears to use (`emanet bench complexity` explains). Costs are always Table 1's setting.")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "~": r"\~{}", "^": r"\^{}"}


def _tex(text: str) -> str:
    return re.sub(r"[&%_#~^]", lambda m: _LATEX_ESCAPES[m.group()], text)


def to_latex(table: Table) -> str:
    cols = "l" + "cc" * len(table.columns)
    head = " & ".join(["Method"] + [rf"\multicolumn{{2}}{{c}}{{{_tex(c['label'])}}}" for c in table.columns])
    sub = " & ".join([""] + ["ours & paper"] * len(table.columns))
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(table.title)}}}",
             rf"\begin{{tabular}}{{{cols}}}", r"\toprule", head + r" \\", sub + r" \\", r"\midrule"]
    for row in table.rows:
        values = []
        for column in table.columns:
            cell = row.cells[column["key"]]
            values += [_tex(_ours_text(cell)), _tex(_paper_text(cell))]
        lines.append(" & ".join([_tex(row.label)] + values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    head = "".join(f"<th colspan=3>{html.escape(c['label'])}</th>" for c in table.columns)
    sub = "".join("<th>ours</th><th>paper</th><th>&Delta;</th>" for _ in table.columns)
    body = []
    for row in table.rows:
        tds = []
        for column in table.columns:
            cell = row.cells[column["key"]]
            ours = html.escape(_ours_text(cell))
            if cell.source:
                title = f"run: {cell.source}" + (f"; MLflow run {cell.mlflow_run}" if cell.mlflow_run else "")
                ours = f'<a href="{html.escape(_relative_link(cell.source))}" title="{html.escape(title)}">{ours}</a>'
            paper = html.escape(_paper_text(cell))
            cls = ' class="np"' if cell.paper is None else ""
            diff = f"{cell.diff:+.2f}" if cell.diff is not None else ""
            tds.append(f"<td>{ours}</td><td{cls}>{paper}</td><td>{diff}</td>")
        note = f"<br><small>{html.escape(row.note)}</small>" if row.note else ""
        body.append(f"<tr><th>{html.escape(row.label)}{note}</th>{''.join(tds)}</tr>")
    pending = "".join(f"<li>{html.escape(line)}</li>" for line in _pending(table))
    return (f"<h2 id='{table.name}'>{html.escape(table.title)}</h2><table><thead><tr><th></th>{head}</tr>"
            f"<tr><th></th>{sub}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            + (f"<ul>{pending}</ul>" if pending else ""))


def _relative_link(source: str) -> str:
    """Links from report/report.html to ../runs/<experiment>/ or ../bench/complexity.json."""
    path = Path(source)
    return f"../{path.parent.name}/{path.name}" if path.parent.name in ("runs", "bench") else str(path)
