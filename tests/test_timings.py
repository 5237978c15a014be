"""Per-job timings of the pipeline: Snakemake's benchmark files, the run folders' timings.json, the summary."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from emanet.bench import timings
from emanet.bench.timings import Job
from emanet.config import load_params
from tests.helpers.runs import emanet

BIN = Path(sys.executable).parent


def _dry_run_jobs(root: Path) -> list[dict]:
    """Every job of `snakemake -n --forceall`: its rule and its input, output and benchmark paths."""
    proc = subprocess.run(
        [str(BIN / "snakemake"), "-n", "--forceall"],
        cwd=root,
        capture_output=True,
        text=True,
        env=dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = []
    for block in re.split(r"^(?=(?:local)?rule \w+:$)", proc.stdout, flags=re.M)[1:]:
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, re.M))
        jobs.append(
            {
                "rule": re.match(r"(?:local)?rule (\w+):", block).group(1),
                **{
                    k: [p.strip() for p in fields.get(k, "").split(",") if p.strip()]
                    for k in ("input", "output", "benchmark")
                },
                "priority": int(fields.get("priority", 0)),
            }
        )
    return jobs


def test_every_rule_benchmarks_its_jobs_and_the_job_graph_is_the_snakefiles(root):
    """Each job (but the `all` target) writes results/<profile>/benchmarks/<rule>[/<item>].tsv, which
    read_benchmarks maps back to the job; the job graph timings.job_graph derives from params.yaml has exactly
    the dependencies the Snakefile's inputs and outputs give."""
    params = load_params(root / "params.yaml")
    bench = f"results/{params['profile']}/benchmarks/"
    jobs = [j for j in _dry_run_jobs(root) if j["rule"] != "all"]
    assert all(len(j["benchmark"]) == 1 and j["benchmark"][0].startswith(bench) for j in jobs), [
        j["rule"] for j in jobs if not j["benchmark"]
    ]
    by_path = {}
    for j in jobs:
        parts = Path(j["benchmark"][0][len(bench) :]).with_suffix("").parts
        assert parts[0] == j["rule"]
        by_path[j["benchmark"][0]] = Job(parts[0], "/".join(parts[1:]) or None)
    producer = {out: by_path[j["benchmark"][0]] for j in jobs for out in j["output"]}
    from_snakemake = {by_path[j["benchmark"][0]]: {producer[i] for i in j["input"] if i in producer} for j in jobs}
    graph = timings.job_graph(params)
    assert {job: set(needs) for job, needs in graph.items()} == from_snakemake
    assert {job.stage for job in graph} == set(timings.STAGES)
    # every job gets its bottom level as its priority (Snakemake prints none when it is 0)
    assert {by_path[j["benchmark"][0]]: j["priority"] for j in jobs} == timings.priorities(graph)


def _write_bench(folder: Path, job: Job, wall: float, cpu: str = "1.5", rss: str = "100.0") -> None:
    path = folder / (f"{job.stage}.tsv" if job.item is None else f"{job.stage}/{job.item}.tsv")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        f"{wall}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n"
    )


GRAPH = {
    Job("synth"): (),
    Job("train", "a"): (Job("synth"),),
    Job("train", "b"): (Job("synth"),),
    Job("evaluate", "a"): (Job("train", "a"),),
    Job("evaluate", "b"): (Job("train", "b"),),
    Job("finetune", "c"): (Job("train", "b"),),
    Job("evaluate", "c"): (Job("finetune", "c"),),
    Job("report"): (Job("evaluate", "a"), Job("evaluate", "b"), Job("evaluate", "c")),
}


def test_the_summary_gives_stages_the_slowest_jobs_and_the_critical_path(tmp_path):
    walls = {
        Job("synth"): 1.0,
        Job("train", "a"): 30.0,
        Job("train", "b"): 10.0,
        Job("evaluate", "a"): 5.0,
        Job("evaluate", "b"): 2.0,
        Job("finetune", "c"): 40.0,
        Job("evaluate", "c"): 0.0,
    }
    for job, wall in walls.items():
        _write_bench(tmp_path, job, wall, cpu="NA" if job == Job("synth") else str(wall / 2))
    read = timings.read_benchmarks(tmp_path)
    assert read[Job("train", "a")].wall_s == 30.0 and read[Job("train", "a")].cpu_s == 15.0
    assert read[Job("synth")].cpu_s is None and read[Job("synth")].max_rss_mb == 100.0
    summary = timings.summarise(GRAPH, read, cores=2, source="test")
    # b's chain (1 + 10 + 40) is longer than a's (1 + 30 + 5) though a's training is the slower
    assert [r["job"] for r in summary["critical_path"]["jobs"]] == [
        "synth",
        "train b",
        "finetune c",
        "evaluate c",
        "report",
    ]
    assert summary["critical_path"]["wall_s"] == 51.0
    assert summary["lower_bound_s"] == max(51.0, 88.0 / 2)
    assert summary["missing"] == ["report"] and summary["measured"] == 7 and summary["jobs"] == 8
    stages = {r["stage"]: r for r in summary["stages"]}
    assert list(stages) == ["synth", "train", "evaluate", "finetune"]  # pipeline order
    assert stages["train"]["wall_s"] == 40.0 and stages["train"]["jobs"] == 2 and stages["train"]["max_wall_s"] == 30.0
    assert stages["train"]["cpu_s"] == 20.0 and stages["synth"]["cpu_s"] is None
    assert abs(sum(r["share"] for r in stages.values()) - 1) < 1e-9
    assert [r["job"] for r in summary["slowest"]][:3] == ["finetune c", "train a", "train b"]
    text = timings.format_summary(summary)
    assert (
        "Critical path (51.0 s): synth (1.0 s) -> train b (10.0 s) -> finetune c (40.0 s) -> evaluate c (0.0 s) "
        "-> report (– s)" in text
    )
    assert "| train | 2 | 40.0 | 45 % | 20.0 | 30.0 | 20.0 |" in text


def test_priorities_put_the_heads_of_long_chains_first():
    """A job's priority is the training and evaluation work of the longest chain from it to the end."""
    levels = timings.priorities(GRAPH)
    assert levels[Job("report")] == 0 and levels[Job("finetune", "c")] == 2 and levels[Job("evaluate", "a")] == 1
    assert levels[Job("train", "a")] == 2 and levels[Job("train", "b")] == 3  # b heads the finetune chain
    assert levels[Job("synth")] == 3
    assert timings.priorities(GRAPH, {"train": 5})[Job("train", "b")] == 5


def test_a_file_that_is_not_a_benchmark_is_named(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train/a.tsv").write_text("s\tcpu_time\nfast\t1\n")
    with pytest.raises(ValueError, match=r"train/a.tsv: column 's' holds 'fast', not seconds"):
        timings.read_benchmarks(tmp_path)
    (tmp_path / "train/a.tsv").write_text("wall\n3\n")
    with pytest.raises(ValueError, match=r"train/a.tsv: not a Snakemake benchmark file"):
        timings.read_benchmarks(tmp_path)


def test_run_folders_record_train_and_evaluate_and_a_finetune_is_its_training(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    for run in ("a", "c"):
        timings.record(runs / run, "train", timings.started().earlier(3.0))
    timings.record(runs / "c", "evaluate", timings.started().earlier(1.0))
    entry = json.loads((runs / "a/timings.json").read_text())["train"]
    assert 3.0 <= entry["wall_s"] < 60 and entry["cpu_s"] > 0 and entry["max_rss_mb"] > 1 and entry["finished"]
    monkeypatch.setenv("RANK", "1")
    assert timings.record(runs / "b", "train", timings.started()) is None and not (runs / "b").exists()
    read = timings.read_run_folders(runs, GRAPH)
    assert set(read) == {Job("train", "a"), Job("finetune", "c"), Job("evaluate", "c")}  # not a's evaluate, nor b
    c = json.loads((runs / "c/timings.json").read_text())
    assert read[Job("finetune", "c")].wall_s == pytest.approx(c["train"]["wall_s"])  # its evaluate is a job apart


def test_bench_pipeline_prints_the_summary_or_says_what_is_missing(tmp_path, root):
    results = tmp_path / "results"
    args = [
        "bench",
        "pipeline",
        "--params",
        str(root / "params.yaml"),
        "--profile",
        "tiny",
        "--results",
        str(results),
        "--cores",
        "2",
    ]
    proc = emanet(args)
    assert proc.returncode == 2 and "no job of this pipeline measured" in proc.stderr and str(results) in proc.stderr
    _write_bench(results / "benchmarks", Job("train", "ema512"), 12.5)
    _write_bench(results / "benchmarks", Job("evaluate", "ema512"), 4.0)
    proc = emanet(args)
    assert proc.returncode == 0, proc.stderr
    jobs = len(timings.job_graph(load_params(root / "params.yaml"), "tiny"))
    assert "Snakemake's benchmark files" in proc.stdout and f"2 of {jobs} jobs measured" in proc.stdout
    assert (
        "Critical path (16.5 s): synth (– s)" in proc.stdout
        and "evaluate ema512 (4.0 s) -> report (– s)" in proc.stdout
    )
    assert "train ema512 (12.5 s) -> evaluate ema512 (4.0 s)" in proc.stdout
    summary = json.loads(emanet([*args, "--json"]).stdout)
    assert summary["measured"] == 2 and summary["slowest"][0] == {
        "job": "train ema512",
        "wall_s": 12.5,
        "cpu_s": 1.5,
        "max_rss_mb": 100.0,
    }


def test_exact_run_folder_cpu_replaces_snakemakes_sampled_cpu(tmp_path, root):
    """Snakemake samples CPU time every 30 s after the first 30 s, so a 40 s training job can read 15 s of CPU;
    where the run folder recorded its own getrusage figure, the summary uses that (wall time stays Snakemake's)."""
    results = tmp_path / "results"
    _write_bench(results / "benchmarks", Job("train", "ema512"), 40.0, cpu="15.2")
    _write_bench(results / "benchmarks", Job("evaluate", "ema512"), 4.0, cpu="3.0")
    (results / "runs/ema512").mkdir(parents=True)
    (results / "runs/ema512/timings.json").write_text(
        json.dumps(
            {"train": {"wall_s": 38.0, "cpu_s": 34.7, "max_rss_mb": 900.0, "finished": "2026-11-30T15:00:00+00:00"}}
        )
    )
    summary = timings.pipeline_summary(load_params(root / "params.yaml"), "tiny", results, cores=2)
    slowest = {r["job"]: r for r in summary["slowest"]}
    assert slowest["train ema512"]["cpu_s"] == 34.7 and slowest["train ema512"]["wall_s"] == 40.0
    assert slowest["evaluate ema512"]["cpu_s"] == 3.0  # no timings.json entry: Snakemake's figure
    assert "timings.json (exact, not sampled)" in summary["source"]


@pytest.mark.parametrize("cores", ["0", "-3", "two"])
def test_bench_pipeline_refuses_a_core_count_below_one(tmp_path, root, cores):
    proc = emanet(
        ["bench", "pipeline", "--params", str(root / "params.yaml"), "--results", str(tmp_path), "--cores", cores]
    )
    assert proc.returncode == 2 and "argument --cores" in proc.stderr and "Traceback" not in proc.stderr


def test_a_command_execd_after_another_is_not_charged_for_its_cpu(tmp_path):
    """A shell running `(train && evaluate)` execs the last command in its own process, which then carries the
    training's CPU time as waited-for children; the evaluation's record must count only its own."""
    burn = "import time; t = time.process_time()\nwhile time.process_time() - t < 1.5: pass"
    record = f"from emanet.bench import timings; timings.record({str(tmp_path)!r}, 'evaluate', timings.started())"
    subprocess.run(
        ["bash", "-c", f"{sys.executable} -c '{burn}' && exec {sys.executable} -c \"{record}\""],
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(timings.__file__).parents[1])},
    )
    entry = json.loads((tmp_path / "timings.json").read_text())["evaluate"]
    assert entry["cpu_s"] < 1.0, entry  # its own start-up only, not the 1.5 s of the command before it
