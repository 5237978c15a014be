"""The staleness matrix (#11): each kind of edit reruns exactly what it changes, in Snakemake and DVC alike.

A cut-down tiny pipeline (three experiments, one finetune, 2 iterations) is finished once with Snakemake and
once with DVC (separate working copies). Then, for each edit of :data:`MATRIX` on a fresh copy of the
finished state: the jobs ``snakemake -n`` lists, the stages ``dvc status`` reports after the configure step
(closed over DVC's stage graph: a stage downstream of a changed one reruns once its inputs are rebuilt), and,
for an edit of code (which Snakemake does not see), the (run, stage) pairs ``emanet status --json`` reports
(closed the same way) — each must equal the row's expected set. The matrix as measured is printed (``-s``).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.test_orchestration import BIN, _copy_project, _run

pytestmark = pytest.mark.slow

EXPERIMENTS = ("ema512", "fcn", "r50")
FINETUNE = "ema512_ft"
RUNS = (*EXPERIMENTS, FINETUNE)


def cut_down(params: dict) -> dict:
    """The tiny profile with ema512 and fcn (Table 1: SS and MS+flip), r50 (Fig. 4: the T_eval list) and a
    finetune of ema512 (Table 2's stages: SS and MS+flip), on VOC only, 2 iterations each."""
    params["experiments"] = {k: v for k, v in params["experiments"].items() if k in EXPERIMENTS}
    params["finetunes"] = {FINETUNE: {"data": {"dataset": "voc"}, "eval": {"dataset": "voc"}}}
    params["finetunes"][FINETUNE]["train"] = {"init_from": "ema512"}
    params["datasets"] = ["voc"]
    rename = {"coco_r101_trainaug": FINETUNE}
    tables = {}
    for name in ("table1", "fig4", "table2_stages"):
        table = params["tables"][name]
        rows = [
            {**r, "experiment": rename.get(r["experiment"], r["experiment"])} if "experiment" in r else r
            for r in table["rows"]
        ]
        tables[name] = {**table, "rows": [r for r in rows if r.get("experiment") in (*RUNS, None)]}
    params["tables"] = tables
    params["figures"] = {
        name: figure
        for name, figure in (params.get("figures") or {}).items()
        if figure.get("table") in tables and figure.get("experiment", "ema512") in RUNS
    }
    tiny = params["profiles"]["tiny"]
    tiny["train"]["iterations"] = 2
    tiny["experiments"] = {"r50": {"model": {"backbone": "resnet_tiny"}}}
    return params


def _edit_params(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(work: Path) -> None:
        params = yaml.safe_load((work / "params.yaml").read_text())
        change(params)
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    return edit


def _edit_code(path: str) -> Callable[[Path], None]:
    def edit(work: Path) -> None:
        with open(work / path, "a") as file:
            file.write("\n# an edit\n")

    return edit


def _retrain_parent(work: Path) -> None:
    """ema512 trained again (new weights), as its pipeline would leave it: DVC records the new output."""
    model = work / "results/tiny/runs/ema512/model.pt"
    model.write_bytes(model.read_bytes() + b"retrained")
    if (work / "dvc.lock").exists():
        _run([str(BIN / "dvc"), "commit", "-f", "-q", "train@ema512"], work)


def _set(*keys: str, value) -> Callable[[dict], None]:
    def change(params: dict) -> None:
        tree = params
        for key in keys[:-1]:
            tree = tree.setdefault(key, {})
        tree[keys[-1]] = value

    return change


def _new_experiment(params: dict) -> None:
    params["experiments"]["k16"] = {"data": {"dataset": "voc"}, "model": {"ema": {"num_bases": 16}}}
    params["tables"]["table1"]["rows"].append({"label": "K=16", "experiment": "k16"})


def _flip_off(params: dict) -> None:
    for column in params["tables"]["table1"]["columns"]:
        if column["source"] == "metric:ms_flip":
            column["source"] = "metric:ms"


def _fewer_t_eval(params: dict) -> None:
    params["tables"]["fig4"]["columns"] = params["tables"]["fig4"]["columns"][:-1]


def _drop_fcn_row(params: dict) -> None:
    params["tables"]["table1"]["rows"] = [r for r in params["tables"]["table1"]["rows"] if r.get("experiment") != "fcn"]


ALL_TRAINING = {"train:ema512", "train:fcn", "train:r50", f"finetune:{FINETUNE}"}
ALL_EVALUATION = {f"evaluate:{run}" for run in RUNS}

#: edit -> (how, the jobs that must rerun, whether only code changed: Snakemake cannot see it)
MATRIX: dict[str, tuple[Callable[[Path], None], set[str], bool]] = {
    "eval scales (MS+flip)": (
        _edit_params(_set("profiles", "tiny", "eval", "scales", value=[1.0, 1.5])),
        {"evaluate:ema512", "evaluate:fcn", f"evaluate:{FINETUNE}", "report"},
        False,
    ),
    "a protocol's flip (ms_flip -> ms)": (
        _edit_params(_flip_off),
        {"evaluate:ema512", "evaluate:fcn", "report"},
        False,
    ),
    "T_eval list (Fig. 4 columns)": (_edit_params(_fewer_t_eval), {"evaluate:r50", "report"}, False),
    "logging cadence": (_edit_params(_set("profiles", "tiny", "train", "log_interval", value=1)), set(), False),
    "loader workers": (_edit_params(_set("profiles", "tiny", "data", "workers", value=1)), set(), False),
    "one experiment's model setting": (
        _edit_params(_set("experiments", "fcn", "model", "dropout", value=0.2)),
        {"train:fcn", "evaluate:fcn", "report"},
        False,
    ),
    "the other profile's settings": (
        _edit_params(_set("profiles", "paper", "train", "iterations", value=1000)),
        set(),
        False,
    ),
    "a table's title": (_edit_params(_set("tables", "table1", "title", value="Table 1 (retitled)")), {"report"}, False),
    "a table's rows (fcn's row dropped)": (_edit_params(_drop_fcn_row), {"evaluate:fcn", "report"}, False),
    "a new experiment": (_edit_params(_new_experiment), {"train:k16", "evaluate:k16", "report"}, False),
    "a finetune's parent retrained": (
        _retrain_parent,
        {"evaluate:ema512", f"finetune:{FINETUNE}", f"evaluate:{FINETUNE}", "report"},
        False,
    ),
    "report code": (_edit_code("emanet/report/__init__.py"), {"report"}, True),
    "evaluation code": (_edit_code("emanet/engine/metrics.py"), {*ALL_EVALUATION, "report"}, True),
    "training transform code": (
        _edit_code("emanet/data/loading/transforms.py"),
        {*ALL_TRAINING, *ALL_EVALUATION, "report"},
        True,
    ),
}


def _downstream(jobs: set[str], runs: list[str], parents: dict[str, str]) -> set[str]:
    """``jobs`` and every job that consumes their outputs: train/finetune -> evaluate and child finetunes,
    evaluate -> report."""
    below: dict[str, set[str]] = {}
    for run in runs:
        trainer = f"finetune:{run}" if run in parents else f"train:{run}"
        below.setdefault(trainer, set()).add(f"evaluate:{run}")
        below.setdefault(f"evaluate:{run}", set()).add("report")
        if run in parents:
            parent = parents[run]
            below.setdefault(f"finetune:{parent}" if parent in parents else f"train:{parent}", set()).add(trainer)
    closed, todo = set(), list(jobs)
    while todo:
        job = todo.pop()
        if job not in closed:
            closed.add(job)
            todo.extend(below.get(job, ()))
    return closed


def _plan(work: Path) -> tuple[list[str], dict[str, str]]:
    params = yaml.safe_load((work / "params.yaml").read_text())
    parents = {name: entry["train"]["init_from"] for name, entry in (params.get("finetunes") or {}).items()}
    return [*params["experiments"], *parents], parents


def snakemake_jobs(work: Path) -> set[str]:
    """The jobs ``snakemake -n`` would run, as ``rule:wildcard`` (``report``, ``train:fcn``), less ``all``."""
    dry = _run([str(BIN / "snakemake"), "-n"], work)
    jobs = set()
    for block in re.split(r"^(?=(?:local)?rule \w+:$)", dry, flags=re.M)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block).group(1)
        wildcards = re.search(r"^    wildcards: \w+=(\S+)$", block, re.M)
        if rule != "all":
            jobs.add(f"{rule}:{wildcards.group(1)}" if wildcards else rule)
    return jobs


def dvc_stages(work: Path) -> set[str]:
    """After the configure step, the stages ``dvc status`` reports changed (configure itself always runs),
    named as Snakemake's jobs (``evaluate_finetune@x`` is the evaluate job of x), closed downstream."""
    _run([str(BIN / "python"), "-m", "emanet.cli", "configure"], work)
    status = json.loads(_run([str(BIN / "dvc"), "status", "--json"], work, stderr=False) or "{}")
    changed = set()
    for name in status:
        stage, _, item = name.partition("@")
        if stage != "configure":
            changed.add(f"{'evaluate' if stage == 'evaluate_finetune' else stage}{':' + item if item else ''}")
    return _downstream(changed, *_plan(work))


def emanet_status_jobs(work: Path) -> set[str]:
    """The (run, stage) pairs ``emanet status --json`` reports stale, as jobs, closed downstream."""
    report = json.loads(_run([str(BIN / "python"), "-m", "emanet.cli", "status", "--json"], work, stderr=False))
    runs, parents = _plan(work)
    jobs = set()
    for run, entry in report["runs"].items():
        for stale in entry["stale"]:
            trainer = "finetune" if run in parents else "train"
            jobs.add(f"{trainer if stale['stage'] == 'train' else 'evaluate'}:{run}")
    if report["report"]["stale"]:
        jobs.add("report")
    return _downstream(jobs, runs, parents)


def _finish(work: Path, tool: str) -> None:
    params = cut_down(yaml.safe_load((work / "params.yaml").read_text()))
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if tool == "snakemake":
        _run([str(BIN / "snakemake"), "-c1"], work)
        assert snakemake_jobs(work) == set()
    else:
        (work / ".venv").symlink_to(BIN.parent)  # a clone after `make venv`: its own .venv/
        _run(["git", "init", "-q"], work)
        _run([str(BIN / "dvc"), "init", "-q"], work)
        # as README's `.venv/bin/dvc repro`, without an activated venv: the stages must not need emanet on PATH
        _run([str(BIN / "dvc"), "repro", "-q"], work, venv_on_path=False)
        assert dvc_stages(work) == set()


def _measure(name: str, finished: dict[str, Path], tmp: Path) -> dict[str, set[str]]:
    edit, _, code_only = MATRIX[name]
    seen = {}
    for tool, source in finished.items():
        work = tmp / f"{re.sub(r'[^a-z0-9]+', '_', name.lower())}_{tool}"
        shutil.copytree(source, work, symlinks=True)
        edit(work)
        if tool == "snakemake":
            seen["snakemake"] = snakemake_jobs(work)
            if code_only:
                seen["emanet status"] = emanet_status_jobs(work)
        else:
            seen["dvc"] = dvc_stages(work)
        shutil.rmtree(work)
    return seen


def test_each_edit_reruns_exactly_what_it_changes(tmp_path, root):
    finished = {tool: _copy_project(root, tmp_path / tool) for tool in ("snakemake", "dvc")}
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(_finish, finished.values(), finished))
    with ThreadPoolExecutor(2) as pool:
        measured = dict(zip(MATRIX, pool.map(lambda name: _measure(name, finished, tmp_path), MATRIX)))

    lines = ["| edit | should rerun | Snakemake `-n` | DVC `status` | `emanet status` |", "|---|---|---|---|---|"]
    failures = []
    for name, (_, expected, code_only) in MATRIX.items():
        seen = measured[name]
        cells = []
        for tool in ("snakemake", "dvc", "emanet status"):
            if tool not in seen:
                cells.append("–")
                continue
            want = set() if tool == "snakemake" and code_only else expected  # Snakemake does not see code
            agrees = "nothing (it does not see code)" if want != expected else "same"
            cells.append(agrees if seen[tool] == want else "DIFFERS: " + (", ".join(sorted(seen[tool])) or "nothing"))
            if seen[tool] != want:
                failures.append(f"{name}: {tool} reruns {sorted(seen[tool])}, expected {sorted(want)}")
        lines.append(f"| {name} | {', '.join(sorted(expected)) or 'nothing'} | " + " | ".join(cells) + " |")
    print("\n" + "\n".join(lines))
    assert not failures, "\n".join(failures)
