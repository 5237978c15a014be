"""What each table's numbers were made with: the runs' setting (backbone, output stride, crop, iterations,
data, profile), the cost columns' setting, and the mark that synthetic data carries everywhere.

A run's setting comes from its own record: ``runs/<name>/run.json``'s ``params`` (the flattened config it
was trained with) and, for what it was evaluated on (``eval.dataset``, ``eval.split``,
``eval.output_stride``), the evaluation identity its last evaluation of the table's protocols recorded
(``evaluations.<protocol>.identity``), which follows an evaluation-only edit; a run not made (or not
evaluated) yet is described by what params.yaml would run (:func:`emanet.config.resolve`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from emanet.config import flatten, resolve
from emanet.report.tables import Table, build_tables, read_complexity
from emanet.runs.folder import read_record, run_dir


def synthetic_mark(params: dict, profile: str) -> str:
    """The line every table file and figure of a synthetic-data profile carries; "" for real data."""
    if not resolve(params, profile).sources.synthetic:
        return ""
    return (
        f"SYNTHETIC DATA ({profile} profile): a small network trained briefly on synthetic images; "
        "not comparable to the paper"
    )


#: run.json's evaluation identity values -> the flat keys they set.
_EVALUATED = {"dataset": "eval.dataset", "split": "eval.split", "output_stride": "eval.output_stride"}


def run_params(
    params: dict, profile: str, results_root: Path, experiment: str, protocols: list[str] | None = None
) -> dict:
    """The flat config (``model.backbone``, ``train.crop_size``, ``eval.split``...) a run was made with, or
    would be: its evaluation keys as its last recorded evaluation of ``protocols`` (any protocol when None)
    used them (module docstring)."""
    info = read_record(run_dir(results_root, experiment))[0]
    made = info.get("params")
    would = None
    if isinstance(made, dict) and "model.backbone" in made:
        flat = dict(made)
    else:
        flat = would = flatten(resolve(params, profile, experiment=experiment).to_dict())
    evaluated = _last_evaluation(info, protocols)
    if evaluated is not None:
        flat.update({key: evaluated.get(name) for name, key in _EVALUATED.items()})
    elif would is None:  # trained, not evaluated yet: it will be with today's settings
        would = flatten(resolve(params, profile, experiment=experiment).to_dict())
        flat.update({key: would.get(key) for key in _EVALUATED.values()})
    return flat


def _last_evaluation(info: dict, protocols: list[str] | None) -> dict | None:
    """The evaluation identity values (``dataset``, ``split``, ``output_stride``...) of the protocol of
    ``protocols`` evaluated last, as run.json's ``evaluations`` records them; None when none is."""
    found = []
    for protocol, record in (info.get("evaluations") or {}).items():
        values = ((record or {}).get("identity") or {}).get("values")
        if (protocols is None or protocol in protocols) and isinstance(values, dict):
            found.append((str(record.get("finished") or ""), values))
    return max(found, key=lambda pair: pair[0])[1] if found else None


def _stride(p: dict) -> str:
    train, test = p["model.output_stride"], p.get("eval.output_stride")
    return f"OS {train}" if test in (None, train) else f"train OS {train} / test OS {test}"


def _data(p: dict) -> str:
    evaluated = p.get("eval.dataset") or p["data.dataset"]
    split = f"{p['data.dataset']} {p['data.train_split']}"
    return f"{split} -> {evaluated} {p['eval.split']}"


def _start(p: dict) -> str:
    if p.get("train.init_from"):
        return f"from run {p['train.init_from']}"
    return f"{p.get('model.pretrained')} backbone" if p.get("model.pretrained") else "backbone from scratch"


#: The parts of a setting, in the order they are said.
_PARTS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    (
        "backbone",
        lambda p: (
            f"{p['model.backbone']} ({p['model.stem']} stem, width {p['model.base_width']})"
            if p["model.backbone"] == "resnet_tiny"
            else str(p["model.backbone"])
        ),
    ),
    ("head", lambda p: f"head C={p['model.head_channels']}"),
    ("stride", _stride),
    ("crop", lambda p: f"crop {p['train.crop_size']}"),
    ("iterations", lambda p: f"{p['train.iterations']} iterations x batch {p['train.batch_size']}"),
    ("start", _start),
    ("data", _data),
    ("profile", lambda p: f"profile {p['profile']}" + (" (synthetic images)" if p.get("sources.synthetic") else "")),
)


def describe_runs(settings: dict[str, dict]) -> str:
    """One sentence for the runs of a table: the parts they share, then each differing part with its rows.

    ``settings`` maps a row label to its flat config. Example: "resnet_tiny (...), OS 8, crop 65, ...;
    head C=64 (EMANet (512)), head C=32 (EMANet (256))".
    """
    if not settings:
        return ""
    said = {label: {name: part(p) for name, part in _PARTS} for label, p in settings.items()}
    shared, differing = [], []
    for name, _ in _PARTS:
        values = {label: parts[name] for label, parts in said.items()}
        if len(set(values.values())) == 1:
            shared.append(next(iter(values.values())))
        else:
            groups: dict[str, list[str]] = {}
            for label, value in values.items():
                groups.setdefault(value, []).append(label)
            differing.append(", ".join(f"{value} ({', '.join(labels)})" for value, labels in groups.items()))
    return ", ".join(shared) + "".join(f"; {part}" for part in differing)


def describe_costs(complexity: dict | None) -> str:
    """The cost columns' setting, from bench/complexity.json (always Table 1's, whatever the profile)."""
    if complexity is None:
        return "bench/complexity.json not made yet"
    s = complexity["setting"]
    return (
        f"{s['backbone']} ({s['stem']} stem) at {s['size']}x{s['size']}, OS {s['output_stride']}, "
        f"K={s['num_bases']}, T={s['stages']}, counted on shapes by `emanet bench complexity`, not from the "
        "runs above"
    )


def annotate(tables: list[Table], params: dict, profile: str, results_root: Path, complexity: dict | None) -> None:
    """Fill each table's setting, cost setting, mark and notes (in place)."""
    from emanet.report.notes import table_notes

    mark = synthetic_mark(params, profile)
    for table in tables:
        protocols = [c["source"].partition(":")[2] for c in table.columns if c["source"].startswith("metric:")]
        runs = {
            row.label: run_params(params, profile, results_root, row.experiment, protocols)
            for row in table.rows
            if row.experiment
        }
        table.setting = describe_runs(runs)
        table.cost_setting = describe_costs(complexity) if table.has_costs else ""
        table.mark = mark
        table.notes = table_notes(table, complexity)


def annotated_tables(
    params: dict, profile: str, results_root: Path, mlflow_runs: dict[str, dict] | None = None
) -> list[Table]:
    """Every table of params.yaml filled (:func:`emanet.report.tables.build_tables`, metric cells from
    ``mlflow_runs`` when given) and annotated (:func:`annotate`), the cost file read once for both; cells
    read from stale run folders marked (:func:`emanet.report.staleness.mark_stale`)."""
    complexity = read_complexity(results_root)
    tables = build_tables(params, results_root, mlflow_runs, complexity)
    annotate(tables, params, profile, results_root, complexity)
    if mlflow_runs is None:  # values from the run folders: marked where their run is stale
        from emanet.report.staleness import mark_stale
        from emanet.runs.status import status

        mark_stale(tables, status(params, profile, results_root))
    return tables
