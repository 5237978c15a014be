"""The paper's tables from params.yaml's ``tables`` and the run folders: ours beside the paper's.

Each cell holds our value (with the run folder and MLflow run id it came from), the paper's value with
its confidence, and the difference where both are numbers: mIoU points for metrics, percent of the
paper's value for costs. Rendered as Markdown, LaTeX and HTML; each rendering carries the table's setting
(the paper's and this report's, :mod:`emanet.report.settings`) and, for synthetic data, the mark.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from emanet.plan import validate
from emanet.runs import folder

NOT_PUBLISHED = "n/p"
#: Beside a value whose run holds imported weights (`emanet import-weights`), not weights trained here.
IMPORTED = "(imported)"
MIB = 2**20
#: A cost's base unit per field: what ``Cell.ours`` holds and what the paper's "+63.4G" is read into.
COST_UNITS = {"macs": "MACs", "params": "parameters", "module_output_bytes": "MiB", "activation_bytes": "fp32 values"}


@dataclass
class Cell:
    ours: float | None = None  # metric in %, or a cost in COST_UNITS[unit]
    text: str = ""  # formatted value of ours
    paper: str | float | None = None
    confidence: str | None = None
    source: str | None = None  # run folder (or bench file) the value came from
    mlflow_run: str | None = None
    missing: str | None = None  # why ours is absent
    unit: str | None = None  # a cost cell's field (a key of COST_UNITS); None for a metric

    @property
    def paper_value(self) -> float | None:
        """The paper's value as a number in the unit of ``ours`` (a cost such as "+63.4G" read by its suffix)."""
        if isinstance(self.paper, int | float):
            return float(self.paper)
        if self.unit and isinstance(self.paper, str):
            return parse_cost(self.paper, self.unit)
        return None

    @property
    def diff(self) -> float | None:
        """Ours minus the paper's: mIoU points for a metric, percent of the paper's value for a cost."""
        paper = self.paper_value
        if self.ours is None or paper is None:
            return None
        return 100.0 * (self.ours - paper) / paper if self.unit else self.ours - paper

    @property
    def diff_text(self) -> str:
        diff = self.diff
        if diff is None:
            return ""
        text = f"{diff:+.1f}%" if self.unit else f"{diff:+.2f}"
        return text[1:] if float(text.rstrip("%")) == 0 else text  # 0.0%, not -0.0% or +0.0%


@dataclass
class Row:
    label: str
    cells: dict[str, Cell] = field(default_factory=dict)
    note: str | None = None
    experiment: str | None = None  # the run folder its metrics come from
    cost: str | None = None  # its key in bench/complexity.json


@dataclass
class Table:
    name: str
    title: str
    columns: list[dict]
    rows: list[Row]
    paper_setting: str | None = None  # params.yaml's tables.<name>.paper_setting
    setting: str = ""  # what this report's numbers were made with (settings.describe_table)
    cost_setting: str = ""  # the setting of the cost columns (bench/complexity.json)
    mark: str = ""  # the synthetic-data mark; empty for real data
    notes: list[str] = field(default_factory=list)  # what this table's numbers need said (notes.table_notes)

    @property
    def has_costs(self) -> bool:
        return any(c["source"].startswith("cost:") for c in self.columns)


def parse_cost(text: str, unit: str) -> float | None:
    """Table 1's "+63.4G", "42.6M", "2.603G" in ``unit``'s base unit (:data:`COST_UNITS`); None if unreadable.

    Memory as torchstat prints it: "M" is MiB and "G" a thousand MiB (the backbone's 2.603G is 2603 MiB).
    In the allocations reading (``activation_bytes``) heads are in millions of fp32 values and the
    backbone in bytes, as ``emanet bench complexity`` explains.
    """
    match = re.fullmatch(r"\+?([0-9]*\.?[0-9]+)([GM])", text.strip())
    if not match:
        return None
    value, suffix = float(match.group(1)), match.group(2)
    if unit == "module_output_bytes":
        return value * (1000.0 if suffix == "G" else 1.0)
    if unit == "activation_bytes" and suffix == "G":
        return value * 1e9 / 4
    return value * (1e9 if suffix == "G" else 1e6)


def cost_value(field_name: str, raw: float) -> float:
    """A bench/complexity.json number in its base unit (:data:`COST_UNITS`)."""
    if field_name == "module_output_bytes":
        return raw / MIB
    if field_name == "activation_bytes":
        return raw / 4
    return float(raw)


def _format_cost(field_name: str, value: float, head: bool) -> str:
    """A cost in Table 1's notation ("+43.1G", "+10.00M", "2.603G"); ``value`` in its base unit."""
    plus = "+" if head else ""
    if field_name == "macs":
        return f"{plus}{value / 1e9:.1f}G"
    if field_name == "params":
        return f"{plus}{value / 1e6:.2f}M"
    if field_name == "module_output_bytes":
        return f"{plus}{value:.1f}M" if head else f"{value / 1000:.3f}G"
    return f"{plus}{value / 1e6:.1f}M" if head else f"{value * 4 / 1e9:.3f}G"


def _metric_cell(run_dir: Path, protocol: str) -> Cell:
    path = folder.metrics_path(run_dir, protocol)
    package = folder.submission_path(run_dir, protocol, "json")
    packaged = json.loads(package.read_text()) if package.exists() else None
    if not path.exists():
        if packaged:  # a test split: the score comes from the evaluation server
            return Cell(
                text="awaiting server",
                source=str(run_dir),
                missing=f"upload {packaged['submission']} to {packaged['server']}, then `emanet submission "
                f"record --experiment {run_dir.name} --protocol {protocol} --miou ...`",
            )
        return Cell(missing=f"{path} not found")
    metrics = json.loads(path.read_text())
    if packaged and metrics.get("submission_sha256") != packaged["submission_sha256"]:
        return Cell(
            text="stale",
            source=str(run_dir),
            missing=f"{path} scores an earlier package than {packaged['submission']}: submit it again",
        )
    info = folder.read_record(run_dir)[0]  # a damaged run.json: the value still shows, marked stale by status
    value = 100.0 * metrics["miou"]
    return Cell(
        ours=value,
        text=_value_text(value, bool(info.get("imported"))),
        source=str(run_dir),
        mlflow_run=info.get("mlflow_run_id"),
    )


def _value_text(value: float, imported: bool) -> str:
    """A metric in %, marked "(imported)" when the run's weights were imported, not trained here."""
    return f"{value:.2f}" + (f" {IMPORTED}" if imported else "")


def _cost_cell(complexity: dict | None, key: str | None, field_name: str, bench_file: Path) -> Cell:
    if key is None:
        return Cell(unit=field_name)
    if complexity is None:
        return Cell(missing=f"{bench_file} not found", unit=field_name)
    head = key != "backbone"
    cost = complexity["heads"][key] if head else complexity["backbone"]
    if field_name not in cost:
        return Cell(
            missing=f"{bench_file} has no {field_name}: rerun `emanet bench complexity --output {bench_file}`",
            unit=field_name,
        )
    value = cost_value(field_name, cost[field_name])
    return Cell(ours=value, text=_format_cost(field_name, value, head), source=str(bench_file), unit=field_name)


def mlflow_cell(runs: dict[str, dict], experiment: str, protocol: str) -> Cell:
    """A metric cell from :func:`emanet.tracking.metrics_from_mlflow`'s summary."""
    run = runs.get(experiment)
    if run is None or protocol not in run:
        return Cell(missing=f"no finished MLflow run of {experiment} with {protocol}/miou")
    value = 100.0 * run[protocol]
    return Cell(ours=value, text=_value_text(value, bool(run.get("imported"))), mlflow_run=run["run_id"])


def complexity_file(results_root: Path) -> Path:
    """Where ``emanet bench complexity`` writes the costs the tables read."""
    return results_root / "bench" / "complexity.json"


def read_complexity(results_root: Path) -> dict | None:
    """The costs in :func:`complexity_file`, None when absent."""
    bench_file = complexity_file(results_root)
    return json.loads(bench_file.read_text()) if bench_file.exists() else None


def build_tables(
    params: dict, results_root: Path, mlflow_runs: dict[str, dict] | None = None, complexity: dict | None = None
) -> list[Table]:
    """Fill every table of params.yaml from ``results_root/runs/*`` and the costs ``complexity`` (read from
    ``results_root/bench`` when not given), or, with ``mlflow_runs``, the metric cells from MLflow alone.
    Settings, marks and notes are added by :func:`emanet.report.settings.annotate`."""
    validate(params)
    bench_file = complexity_file(results_root)
    if complexity is None:
        complexity = read_complexity(results_root)
    tables = []
    for name, spec in params["tables"].items():
        rows = []
        for row_spec in spec["rows"]:
            row = Row(
                row_spec["label"],
                note=row_spec.get("note"),
                experiment=row_spec.get("experiment"),
                cost=row_spec.get("cost"),
            )
            for column in spec["columns"]:
                kind, _, value = column["source"].partition(":")
                if kind == "metric":
                    experiment = row_spec.get("experiment")
                    if not experiment:
                        cell = Cell()
                    elif mlflow_runs is not None:
                        cell = mlflow_cell(mlflow_runs, experiment, value)
                    else:
                        cell = _metric_cell(folder.run_dir(results_root, experiment), value)
                else:
                    cell = _cost_cell(complexity, row_spec.get("cost"), value, bench_file)
                cell.paper = (row_spec.get("paper") or {}).get(column["key"])
                cell.confidence = row_spec.get("confidence") if cell.paper is not None else None
                row.cells[column["key"]] = cell
            rows.append(row)
        tables.append(Table(name, spec["title"], spec["columns"], rows, paper_setting=spec.get("paper_setting")))
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


def pending(table: Table) -> list[str]:
    """What to do for cells that wait on someone (the evaluation server): one line per cell."""
    return [
        f"{row.label}, {column['label']}: {cell.missing}"
        for row in table.rows
        for column in table.columns
        if (cell := row.cells[column["key"]]).text and cell.missing
    ]


def caption_lines(table: Table) -> list[str]:
    """The table's setting as plain sentences: the paper's, this report's runs', the cost columns'."""
    lines = []
    if table.paper_setting:
        lines.append(f"Paper: {table.paper_setting}.")
    if table.setting:
        lines.append(f"This report: {table.setting}.")
    if table.cost_setting:
        lines.append(f"Costs: {table.cost_setting}.")
    return lines


def to_markdown(table: Table, notes: bool = True) -> str:
    """The table as Markdown: mark, title, settings, rows, pending actions and (``notes``) its notes."""
    header = ["Method"] + [f"{c['label']} ours / paper (Δ)" for c in table.columns]
    lines = [f"> **{table.mark}**", ""] if table.mark else []
    lines += [f"### {table.title}", ""] + [f"*{line}*  " for line in caption_lines(table)]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        cells = []
        for column in table.columns:
            cell = row.cells[column["key"]]
            diff = f" ({cell.diff_text})" if cell.diff_text else ""
            cells.append(f"{_ours_text(cell)} / {_paper_text(cell)}{diff}")
        label = row.label + (f" ({row.note})" if row.note else "")
        lines.append("| " + " | ".join([label] + cells) + " |")
    lines.append("")
    lines += [f"- {line}" for line in pending(table)]
    if notes:
        lines += [f"- {line}" for line in table.notes]
    return "\n".join(lines).rstrip("\n") + "\n"


_LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "~": r"\~{}", "^": r"\^{}", "Δ": r"$\Delta$"}


def _tex(text: str) -> str:
    return re.sub(r"[&%_#~^Δ]", lambda m: _LATEX_ESCAPES[m.group()], text)


def to_latex(table: Table) -> str:
    """The table as a LaTeX float (booktabs): the mark and the settings in the caption, notes below."""
    cols = "l" + "ccc" * len(table.columns)
    head = " & ".join(["Method"] + [rf"\multicolumn{{3}}{{c}}{{{_tex(c['label'])}}}" for c in table.columns])
    sub = " & ".join([""] + [r"ours & paper & $\Delta$"] * len(table.columns))
    mark = rf"\textbf{{{_tex(table.mark)}}} " if table.mark else ""
    caption = " ".join([_tex(table.title) + "."] + [_tex(line) for line in caption_lines(table)])
    lines = [f"% {table.mark}"] if table.mark else []
    lines += [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{mark}{caption}}}",
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
        head + r" \\",
        sub + r" \\",
        r"\midrule",
    ]
    for row in table.rows:
        values = []
        for column in table.columns:
            cell = row.cells[column["key"]]
            values += [_tex(_ours_text(cell)), _tex(_paper_text(cell)), _tex(cell.diff_text)]
        lines.append(" & ".join([_tex(row.label)] + values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = pending(table) + table.notes
    if notes:
        lines += [r"\par\footnotesize"] + [
            re.sub(r"`([^`]+)`", r"\\texttt{\1}", _tex(line)) + r"\par" for line in notes
        ]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    """The table's section body: settings, a horizontally scrolling table, pending actions and notes."""
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
            elif cell.missing:
                ours = f'<span title="{html.escape(cell.missing)}">{ours}</span>'
            paper = html.escape(_paper_text(cell))
            cls = ' class="np"' if cell.paper is None else ""
            tds.append(f"<td>{ours}</td><td{cls}>{paper}</td><td>{html.escape(cell.diff_text)}</td>")
        note = f"<br><small>{html.escape(row.note)}</small>" if row.note else ""
        body.append(f"<tr><th>{html.escape(row.label)}{note}</th>{''.join(tds)}</tr>")
    mark = f"<p class='mark'>{html.escape(table.mark)}</p>" if table.mark else ""
    caption = "".join(f"<p class='setting'>{note_html(line)}</p>" for line in caption_lines(table))
    notes = "".join(f"<li>{note_html(line)}</li>" for line in pending(table) + table.notes)
    return (
        f"{mark}{caption}<div class='scroll'><table><thead><tr><th></th>{head}</tr>"
        f"<tr><th></th>{sub}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
        + (f"<ul class='notes'>{notes}</ul>" if notes else "")
    )


def note_html(line: str) -> str:
    """A note (plain text, `code` in backticks) as HTML: the text escaped, code spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(line))


def _relative_link(source: str) -> str:
    """Links from report/report.html to ../runs/<experiment>/ or ../bench/complexity.json."""
    path = Path(source)
    return f"../{path.parent.name}/{path.name}" if path.parent.name in ("runs", "bench") else str(path)
