"""Where the pipeline's time goes: per-job wall and CPU time, time per stage, the slowest jobs, the critical path.

Two sources, one summary (``emanet bench pipeline``):

- Snakemake writes one benchmark file per job (the rules' ``benchmark:``), ``results/<profile>/benchmarks/
  <rule>.tsv`` or ``<rule>/<item>.tsv``: wall seconds (``s``, exact), peak resident memory (``max_rss``, MB) and
  ``cpu_time`` (seconds). Snakemake samples the job's processes every second for 30 s, then every 30 s, so the
  CPU time of a job longer than 30 s can miss up to 30 s; the wall time is exact.
- ``emanet train`` and ``emanet evaluate`` also record their own process in the run folder,
  ``results/<profile>/runs/<run>/timings.json`` (:func:`record`): wall time from the command's start, CPU time
  (user + system, from ``getrusage``) and peak memory. That is what DVC users have (DVC keeps no timings); it
  covers the training and evaluation jobs, which are nearly all of the time, not the data stages.

The critical path is the longest chain of jobs by wall time through the job graph (:func:`job_graph`, the
Snakefile's rules written out from params.yaml; a test checks it against Snakemake's dry run): no number of
cores finishes the pipeline sooner. Total CPU time over the cores is the other bound.
"""

from __future__ import annotations

import csv
import math
import os
import resource
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from emanet.io import atomic_write_json, read_json_object
from emanet.runs.folder import TIMINGS

#: the stages in pipeline order (the Snakefile's rules, dvc.yaml's stages less configure)
STAGES = ("synth", "download", "weights", "prepare", "complexity", "train", "evaluate", "finetune", "report")


@dataclass(frozen=True, order=True)
class Job:
    """One job of the pipeline: a stage and, for a per-item stage, its dataset or run."""

    stage: str
    item: str | None = None

    def __str__(self) -> str:
        return self.stage if self.item is None else f"{self.stage} {self.item}"


@dataclass(frozen=True)
class Timing:
    """What one job cost: wall seconds, CPU seconds (None when unknown), peak resident memory in MB (None when
    unknown), and when it finished (seconds since the epoch, None when unknown)."""

    wall_s: float
    cpu_s: float | None = None
    max_rss_mb: float | None = None
    finished: float | None = None


def job_graph(params: dict, profile: str | None = None) -> dict[Job, tuple[Job, ...]]:
    """Every job of the pipeline for ``profile`` -> the jobs it needs, as the Snakefile's rules declare them.

    synth <- download[d] <- prepare[d]; synth <- weights; train[e] <- prepare of e's datasets + weights;
    finetune[f] <- prepare of f's training dataset + its parent's train or finetune; evaluate[r] <- prepare of
    r's evaluation dataset + train[r] or finetune[r]; report <- every evaluate + complexity.
    Errors: :class:`emanet.config.ConfigError` for a bad params file, as :mod:`emanet.plan` raises them.
    """
    from emanet import plan

    configs = plan.configs(params, profile)
    experiments, finetunes = plan.experiments(params), plan.finetunes(params)

    def trained_on(run: str) -> Job:
        return Job("prepare", configs[run].data.dataset)

    def evaluated_on(run: str) -> Job:
        return Job("prepare", configs[run].eval.dataset or configs[run].data.dataset)

    def trained_by(run: str) -> Job:
        return Job("finetune" if run in finetunes else "train", run)

    graph: dict[Job, tuple[Job, ...]] = {Job("synth"): (), Job("weights"): (Job("synth"),), Job("complexity"): ()}
    for dataset in plan.datasets(params, profile):
        graph[Job("download", dataset)] = (Job("synth"),)
        graph[Job("prepare", dataset)] = (Job("download", dataset),)
    for run in experiments:
        graph[Job("train", run)] = (trained_on(run), Job("weights"))
    for run in finetunes:
        graph[Job("finetune", run)] = (trained_on(run), trained_by(plan.parent(params, run)))
    for run in (*experiments, *finetunes):
        graph[Job("evaluate", run)] = tuple(dict.fromkeys((evaluated_on(run), trained_by(run))))
    graph[Job("report")] = (*(Job("evaluate", r) for r in (*experiments, *finetunes)), Job("complexity"))
    return graph


#: what a job of each stage weighs when ordering the jobs (:func:`priorities`): a training (train, finetune) or
#: an evaluation one unit, the data and report stages nothing
WORK = {"train": 1, "evaluate": 1, "finetune": 1}


def priorities(graph: dict[Job, tuple[Job, ...]], work: dict[str, int] | None = None) -> dict[Job, int]:
    """Each job's bottom level: the largest :data:`WORK` of a chain of jobs from it (itself included) to the end.

    Snakemake starts the ready jobs of higher priority first, so with these (list scheduling's "bottom level"
    rule) the heads of long chains, e.g. Table 2's COCO training -> trainaug -> trainval finetunes, start
    before the many one-training-one-evaluation runs and the pipeline does not end on one chain running alone
    on one core. Only the order changes: every job runs, each as before."""
    work = WORK if work is None else work
    below: dict[Job, list[Job]] = {job: [] for job in graph}
    for job, needs in graph.items():
        for need in needs:
            below.setdefault(need, []).append(job)
    level: dict[Job, int] = {}

    def visit(job: Job) -> int:
        if job not in level:
            level[job] = work.get(job.stage, 0) + max((visit(after) for after in below[job]), default=0)
        return level[job]

    return {job: visit(job) for job in graph}


def read_benchmarks(folder: str | Path) -> dict[Job, Timing]:
    """Snakemake's benchmark files under ``folder`` (``<rule>.tsv`` or ``<rule>/<item>.tsv``) -> job -> timing.

    A file with several rows (``repeat()``) gives the mean. Errors: ValueError naming the file when one is not
    a Snakemake benchmark file (no ``s`` column, or a row that is not a number)."""
    folder, timings = Path(folder), {}
    for path in sorted(folder.rglob("*.tsv")):
        relative = path.relative_to(folder).with_suffix("")
        parts = relative.parts
        job = Job(parts[0]) if len(parts) == 1 else Job(parts[0], "/".join(parts[1:]))
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if not rows or "s" not in rows[0]:
            raise ValueError(
                f"{path}: not a Snakemake benchmark file (expected a header with an 's' column and a "
                f"row); delete it and rerun the job"
            )
        try:
            wall = sum(float(r["s"]) for r in rows) / len(rows)
        except ValueError:
            raise ValueError(
                f"{path}: column 's' holds {rows[0]['s']!r}, not seconds; delete it and rerun the job"
            ) from None
        timings[job] = Timing(wall, _mean(rows, "cpu_time"), _mean(rows, "max_rss"), path.stat().st_mtime)
    return timings


def _mean(rows: list[dict], column: str) -> float | None:
    """The mean of a numeric column, None when Snakemake could not measure it (NA, -, missing)."""
    try:
        return sum(float(r[column]) for r in rows) / len(rows)
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Start:
    """When a command began (``time.perf_counter()``, seconds) and the CPU seconds its process had already
    been charged for waited-for children by then: when a shell runs ``(train && evaluate)``, it execs the
    last command in its own process, which so inherits the training's CPU time as "children"."""

    clock: float
    children_cpu_s: float

    def earlier(self, seconds: float) -> Start:
        """The same start ``seconds`` earlier on the clock (tests)."""
        return Start(self.clock - seconds, self.children_cpu_s)


def _children_cpu_s() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


def started() -> Start:
    """The start :func:`record` measures from: now, and the children's CPU time so far."""
    return Start(time.perf_counter(), _children_cpu_s())


def record(run_dir: str | Path, command: str, since: Start) -> Path | None:
    """Write this process's cost to ``run_dir/timings.json`` under ``command`` (``train`` or ``evaluate``),
    atomically, keeping the other commands' entries: ``wall_s`` since ``since`` (:func:`started`), ``cpu_s``
    (user + system of this process and of the children it waited for since ``since``, e.g. DataLoader
    workers), ``max_rss_mb``
    and ``finished`` (UTC, ISO 8601). Under torchrun only rank 0 writes (and counts its own process only).
    Returns the file, or None on another rank."""
    if os.environ.get("RANK", "0") != "0":
        return None
    own = resource.getrusage(resource.RUSAGE_SELF)
    # ru_maxrss is in KiB on Linux, in bytes on macOS
    rss_mb = own.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    path = Path(run_dir) / TIMINGS
    entries = read_json_object(path)
    children_cpu_s = _children_cpu_s() - since.children_cpu_s
    entries[command] = {
        "wall_s": round(time.perf_counter() - since.clock, 3),
        "cpu_s": round(own.ru_utime + own.ru_stime + children_cpu_s, 3),
        "max_rss_mb": round(rss_mb, 1),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return atomic_write_json(path, entries)


def read_run_folders(runs: str | Path, graph: dict[Job, tuple[Job, ...]]) -> dict[Job, Timing]:
    """``timings.json`` of each run folder under ``runs`` -> the graph's train, evaluate and finetune jobs.

    A finetune job is its run's ``train`` entry (``emanet train`` of a finetune; its evaluation is an evaluate
    job, as for an experiment). A run without the file or without the job's entry is left out."""
    timings = {}
    for job in graph:
        if job.stage not in ("train", "evaluate", "finetune"):
            continue
        entries = read_json_object(Path(runs) / job.item / TIMINGS)
        commands = ("train",) if job.stage == "finetune" else (job.stage,)
        parts = [entries.get(c) for c in commands]
        if not all(isinstance(p, dict) and isinstance(p.get("wall_s"), (int, float)) for p in parts):
            continue
        cpu = [p.get("cpu_s") for p in parts]
        rss = [p.get("max_rss_mb") for p in parts]
        timings[job] = Timing(
            sum(p["wall_s"] for p in parts),
            sum(cpu) if all(isinstance(c, (int, float)) for c in cpu) else None,
            max(rss) if all(isinstance(r, (int, float)) for r in rss) else None,
            _epoch(parts[-1].get("finished")),
        )
    return timings


def _epoch(iso: object) -> float | None:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return None


def critical_path(graph: dict[Job, tuple[Job, ...]], wall: dict[Job, float]) -> tuple[list[Job], float]:
    """The chain of jobs with the largest total wall time (a job missing from ``wall`` counts 0 s), in run
    order, and that total in seconds."""
    finish: dict[Job, float] = {}
    before: dict[Job, Job | None] = {}

    def visit(job: Job) -> float:
        if job not in finish:
            needs = graph.get(job, ())
            slowest = max(needs, key=visit, default=None)
            before[job] = slowest
            finish[job] = (finish[slowest] if slowest else 0.0) + wall.get(job, 0.0)
        return finish[job]

    if not graph:
        return [], 0.0
    end = max(reversed(list(graph)), key=visit)  # on a tie, the later job: the path runs on to the report
    path = [end]
    while before[path[-1]] is not None:
        path.append(before[path[-1]])
    return path[::-1], finish[end]


def summarise(graph: dict[Job, tuple[Job, ...]], timings: dict[Job, Timing], cores: int, source: str) -> dict:
    """The summary as a JSON-able dict: per stage (jobs, wall and CPU seconds, share of the total wall time),
    the ten slowest jobs, the critical path, the bounds on the pipeline's wall time on ``cores`` cores, the
    observed span (first start to last finish, where the finish times are known) and the jobs not measured."""
    measured = {job: t for job, t in timings.items() if job in graph}
    total_wall = sum(t.wall_s for t in measured.values())
    cpu_known = [t.cpu_s for t in measured.values() if t.cpu_s is not None]
    stages = []
    for stage in STAGES:
        jobs = [t for job, t in measured.items() if job.stage == stage]
        if not jobs:
            continue
        wall = sum(t.wall_s for t in jobs)
        cpu = [t.cpu_s for t in jobs if t.cpu_s is not None]
        stages.append(
            {
                "stage": stage,
                "jobs": len(jobs),
                "wall_s": wall,
                "mean_wall_s": wall / len(jobs),
                "max_wall_s": max(t.wall_s for t in jobs),
                "cpu_s": sum(cpu) if cpu else None,
                "share": wall / total_wall if total_wall else 0.0,
            }
        )
    slowest = sorted(measured.items(), key=lambda kv: (-kv[1].wall_s, kv[0]))[:10]
    path, length = critical_path(graph, {job: t.wall_s for job, t in measured.items()})
    spans = [(t.finished - t.wall_s, t.finished) for t in measured.values() if t.finished is not None]
    return {
        "source": source,
        "cores": cores,
        "jobs": len(graph),
        "measured": len(measured),
        "missing": [str(job) for job in sorted(set(graph) - set(measured))],
        "total_wall_s": total_wall,
        "total_cpu_s": sum(cpu_known) if cpu_known else None,
        "stages": stages,
        "slowest": [
            {"job": str(job), "wall_s": t.wall_s, "cpu_s": t.cpu_s, "max_rss_mb": t.max_rss_mb} for job, t in slowest
        ],
        "critical_path": {
            "jobs": [{"job": str(job), "wall_s": measured[job].wall_s if job in measured else None} for job in path],
            "wall_s": length,
        },
        # each job runs one thread (OMP_NUM_THREADS=threads=1 on the tiny profile), so the summed wall time over
        # the cores bounds the pipeline too, as does the critical path
        "lower_bound_s": max(length, total_wall / max(cores, 1)),
        "observed_span_s": (max(e for _, e in spans) - min(s for s, _ in spans)) if spans else None,
    }


def format_summary(summary: dict) -> str:
    """The summary as Markdown: the totals, a table per stage, the ten slowest jobs and the critical path."""

    def s(value: float | None) -> str:
        return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"

    lines = [
        f"Pipeline timings from {summary['source']}: {summary['measured']} of {summary['jobs']} jobs measured, "
        f"{s(summary['total_wall_s'])} s of job wall time, {s(summary['total_cpu_s'])} s CPU."
    ]
    if summary["observed_span_s"] is not None:
        lines.append(f"Observed span (first job's start to last job's end): {s(summary['observed_span_s'])} s.")
    lines.append(
        f"Lower bound on {summary['cores']} cores: {s(summary['lower_bound_s'])} s (the larger of the "
        f"critical path, {s(summary['critical_path']['wall_s'])} s, and the job wall time over the cores)."
    )
    if summary["missing"]:
        shown = ", ".join(summary["missing"][:8]) + (" …" if len(summary["missing"]) > 8 else "")
        lines.append(f"Not measured ({len(summary['missing'])}): {shown}.")
    lines += ["", "| stage | jobs | wall s | share | mean s | max s | CPU s |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [
        f"| {r['stage']} | {r['jobs']} | {s(r['wall_s'])} | {100 * r['share']:.0f} % | {s(r['mean_wall_s'])} | "
        f"{s(r['max_wall_s'])} | {s(r['cpu_s'])} |"
        for r in summary["stages"]
    ]
    lines += ["", "Ten slowest jobs:", "", "| job | wall s | CPU s | peak MB |", "|---|---:|---:|---:|"]
    lines += [f"| {r['job']} | {s(r['wall_s'])} | {s(r['cpu_s'])} | {s(r['max_rss_mb'])} |" for r in summary["slowest"]]
    path = summary["critical_path"]
    lines += [
        "",
        f"Critical path ({s(path['wall_s'])} s): "
        + " -> ".join(f"{r['job']} ({s(r['wall_s'])} s)" for r in path["jobs"]),
    ]
    return "\n".join(lines)


def pipeline_summary(params: dict, profile: str | None, results: str | Path, cores: int, source: str = "auto") -> dict:
    """:func:`summarise` of ``results`` (``results/<profile>``): ``source`` ``snakemake`` reads
    ``benchmarks/``, ``runs`` reads the run folders' timings.json, ``auto`` the benchmarks when there are
    any, else the run folders. Errors: FileNotFoundError naming what is missing when nothing was measured."""
    results = Path(results)
    graph = job_graph(params, profile)
    bench, runs = results / "benchmarks", results / "runs"
    if source == "auto":
        source = "snakemake" if bench.is_dir() and any(bench.rglob("*.tsv")) else "runs"
    if source == "snakemake":
        timings, where = read_benchmarks(bench) if bench.is_dir() else {}, f"Snakemake's benchmark files ({bench})"
        exact = read_run_folders(runs, graph)
        for job, timing in timings.items():
            if job in exact and exact[job].cpu_s is not None:
                # Snakemake samples CPU time (it misses up to 30 s of a long job); the run folder's getrusage is exact
                timings[job] = Timing(timing.wall_s, exact[job].cpu_s, timing.max_rss_mb, timing.finished)
        if exact:
            where += "; CPU time of training and evaluation from the run folders' timings.json (exact, not sampled)"
    else:
        timings, where = read_run_folders(runs, graph), f"the run folders' timings.json ({runs})"
    if not any(job in graph for job in timings):
        raise FileNotFoundError(
            f"{results}: no job of this pipeline measured (neither benchmarks/<rule>/*.tsv from "
            f"Snakemake nor runs/<run>/timings.json); run the pipeline first"
        )
    return summarise(graph, timings, cores, where)
