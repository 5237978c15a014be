"""Beyond one machine, for real: Snakemake through a single-node Slurm, a PostgreSQL-backed MLflow
server shared by the pipeline, and that server going away in the middle of a training run.

The servers are started and stopped by the tests (tests/helpers/services.py); without the Debian
packages (or root) the tests are skipped with the reason. `.ci/run` installs them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from emanet.tracking import server as tracking_server
from tests.helpers.mlflow_server import free_port
from tests.helpers.runs import ROOT, run_args
from tests.helpers.services import Postgres, Slurm
from tests.test_orchestration import BIN, FINETUNE, KEEP, _copy_project, cut_down

pytestmark = pytest.mark.slow


def _project(tmp_path: Path, name: str) -> Path:
    work = _copy_project(ROOT, tmp_path / name)
    params = cut_down(yaml.safe_load((work / "params.yaml").read_text()))
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return work


def _snakemake(work: Path, env: dict, *extra: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(env, PATH=f"{BIN}{os.pathsep}{env['PATH']}")
    # the failure mode of Snakemake-on-Slurm is a hang, not an error: interrupt, then kill
    cmd = ["timeout", "-s", "INT", "-k", "30", str(timeout), str(BIN / "snakemake"), *extra]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _matrix(work: Path, experiment: str) -> list:
    return json.loads((work / f"results/tiny/runs/{experiment}/metrics.json").read_text())["confusion_matrix"]


def test_slurm_pipeline_submits_every_training_with_sbatch_and_matches_a_local_run(tmp_path):
    local, cluster = _project(tmp_path, "local"), _project(tmp_path, "cluster")
    with Slurm(tmp_path) as slurm:
        env = dict(slurm.env, MLFLOW_TRACKING_URI=f"sqlite:///{cluster}/mlflow.db")
        _snakemake(cluster, env, "--workflow-profile", "workflow/profiles/slurm-local")
    _snakemake(local, dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{local}/mlflow.db"), "-c2")
    for experiment in [*KEEP, *FINETUNE]:
        info = json.loads((cluster / f"results/tiny/runs/{experiment}/run.json").read_text())
        assert info["slurm_job_ids"], f"{experiment} did not run under Slurm"
        assert _matrix(cluster, experiment) == _matrix(local, experiment)
    mlflow.set_tracking_uri(f"sqlite:///{cluster}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["emanet/tiny/voc"])
    assert set(runs["tags.experiment"]) == {*KEEP, *FINETUNE}
    assert runs["tags.slurm_job_id"].notna().all(), "every training run carries its Slurm job id"


def test_pipeline_against_a_postgres_backed_server_and_a_table_from_mlflow_alone(tmp_path):
    work = _project(tmp_path, "work")
    port = free_port()
    with Postgres(tmp_path) as pg:
        server = tracking_server.start(pg.uri, tmp_path / "artifacts", port=port, log_file=tmp_path / "mlflow.log")
        try:
            url = f"http://127.0.0.1:{port}"
            _snakemake(work, dict(os.environ, MLFLOW_TRACKING_URI=url), "-c2")
            from_mlflow = subprocess.run(
                [str(BIN / "emanet"), "report", "--from-mlflow", url, "--table", "table1"],
                cwd=work,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        finally:
            tracking_server.stop(server)
    from_folders = (work / "results/tiny/report/table1.md").read_text()
    assert from_mlflow.strip() == from_folders.strip()
    assert "EMANet (512) | " in from_mlflow and "missing" not in from_mlflow.split("EMANet (512)")[1].split("\n")[0]


def test_server_stopped_and_restarted_mid_run_loses_nothing(tmp_path, prepared_root):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with Postgres(tmp_path) as pg:
        server = tracking_server.start(pg.uri, tmp_path / "artifacts", port=port, log_file=tmp_path / "mlflow.log")
        # long enough (about 40 s) for the server to be stopped and restarted while it trains
        args = run_args(
            "train",
            tmp_path / "out",
            prepared_root,
            "train.iterations=600",
            "train.log_interval=10",
            "train.batch_size=4",
            "tracking.enabled=true",
        )
        env = dict(os.environ, MLFLOW_TRACKING_URI=url, EMANET_TRACKING_RETRY_SECONDS="1", OMP_NUM_THREADS="1")
        training = subprocess.Popen(
            [sys.executable, "-m", "emanet.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        log = tmp_path / "out/runs/ema512/train_log.csv"
        try:
            while not log.exists() or log.read_text().count("\n") < 4:
                assert training.poll() is None, training.stderr.read()
                time.sleep(0.2)
            tracking_server.stop(server)  # the server goes away mid-run ...
            rows_at_stop = log.read_text().count("\n")
            deadline = time.monotonic() + 120  # wait for progress, not a fixed time: a loaded host is slow
            while log.read_text().count("\n") < rows_at_stop + 2 and time.monotonic() < deadline:
                assert training.poll() is None, "training must go on without the server"
                time.sleep(0.2)
            assert training.poll() is None, "training must go on without the server"
            rows_while_down = log.read_text().count("\n") - rows_at_stop
            server = tracking_server.start(
                pg.uri, tmp_path / "artifacts", port=port, log_file=tmp_path / "mlflow.log"
            )  # ... and comes back
            assert training.poll() is None, "the restart must happen mid-run for this test to mean anything"
            _, stderr = training.communicate(timeout=600)
            assert training.returncode == 0, stderr[-3000:]
            assert "is unreachable" in stderr and "answers again" in stderr
            run_id = json.loads((tmp_path / "out/runs/ema512/run.json").read_text())["mlflow_run_id"]
            client = mlflow.MlflowClient(url)
            steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
            logged = [int(line.split(",")[0]) for line in log.read_text().splitlines()[1:]]
            assert sorted(steps) == logged == list(range(10, 601, 10)), "every point once, none lost"
            assert rows_while_down >= 2, "points were logged to the run folder while the server was down"
            assert client.get_run(run_id).info.status == "FINISHED"
        finally:
            training.kill()
            tracking_server.stop(server)


# --- Site settings (partition, account, GPU model, QoS) reach every job that needs them ---------------------

#: what a site fills in, once, in workflow/profiles/slurm/config.yaml
SITE = {"slurm_partition": "gpu_big", "slurm_account": "mylab", "gpu_model": "a100", "qos": "long"}


def _with_site(tmp_path: Path) -> Path:
    """A copy of the project whose Slurm profile has the site values filled in, where a user fills them."""
    work = _copy_project(ROOT, tmp_path / "site")
    path = work / "workflow/profiles/slurm/config.yaml"
    profile = yaml.safe_load(path.read_text())
    assert set(SITE) <= set(profile["default-resources"]), "the profile lists every site value in one place"
    profile["default-resources"].update(SITE)
    assert "set-resources" not in profile, "site values per rule reach only the rules named"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return work


def _dry_run_jobs(work: Path, *targets: str) -> list[dict]:
    """Every job of `snakemake -n` on the paper profile through the Slurm profile: rule, fields, resources."""
    proc = _snakemake(
        work,
        dict(os.environ, OMP_NUM_THREADS="1"),
        *targets,
        "-n",
        "--workflow-profile",
        "workflow/profiles/slurm",
        "--config",
        "profile=paper",
        timeout=300,
    )
    jobs, job = [], None
    for line in (proc.stdout + proc.stderr).splitlines():
        if match := re.fullmatch(r"(?:local)?rule (\w+):", line):
            job = {"rule": match.group(1), "fields": {}, "command": None}
            jobs.append(job)
        elif job is not None and (match := re.fullmatch(r"    (\w+): (.*)", line)):
            job["fields"][match.group(1)] = match.group(2)
        elif job is not None and line.startswith("Shell command: "):
            job["command"] = line.removeprefix("Shell command: ")
        else:
            job = None
    for job in jobs:
        items = job["fields"].get("resources", "").split(", ")
        job["resources"] = dict(item.partition("=")[::2] for item in items if item)
    assert jobs, proc.stdout[-3000:]
    return jobs


def _site_problems(jobs: list[dict]) -> dict[str, dict]:
    """Rule -> the site values its jobs lack or override. A job with GPUs must carry every site value; a job
    without must carry all but gpu_model, which the Slurm executor would read as a request for one GPU.
    Jobs that run nothing (the `all` target) are never submitted and are left out."""
    problems: dict[str, dict] = {}
    for job in jobs:
        if "output" not in job["fields"] and job["command"] in (None, "None"):
            continue
        resources = job["resources"]
        gpus = int(resources.get("gpu", 0))
        expected = SITE if gpus else {k: v for k, v in SITE.items() if k != "gpu_model"}
        wrong = {k: resources.get(k) for k, v in expected.items() if resources.get(k) != v}
        if not gpus and "gpu_model" in resources:
            wrong["gpu_model"] = resources["gpu_model"]
        if wrong:
            problems.setdefault(job["rule"], wrong)
    return problems


def test_every_gpu_job_of_the_paper_profile_gets_the_site_settings(tmp_path):
    jobs = _dry_run_jobs(_with_site(tmp_path))
    gpu_rules = {job["rule"] for job in jobs if int(job["resources"].get("gpu", 0)) > 0}
    # the rules are read from the workflow; this only checks that reading found the 4-GPU ones
    assert {"train", "finetune"} <= gpu_rules, gpu_rules
    assert _site_problems(jobs) == {}
    finetunes = [job for job in jobs if job["rule"] == "finetune"]
    assert len(finetunes) == 4 and all(job["resources"]["gpu"] == "4" for job in finetunes)


def test_a_gpu_rule_added_later_gets_the_site_settings_and_the_check_sees_one_that_does_not(tmp_path):
    work = _with_site(tmp_path)
    with (work / "workflow/rules/train.smk").open("a") as rules:
        rules.write("""

rule later_gpu:
    output:
        "later/gpu.txt",
    resources:
        **job_resources(2, runtime=10),
    shell:
        "touch {output}"


rule later_gpu_own_qos:
    output:
        "later/qos.txt",
    resources:
        gpu=1,
        qos="short",
    shell:
        "touch {output}"


rule later_cpu_without_helper:
    output:
        "later/cpu.txt",
    resources:
        mem_mb=100,
    shell:
        "touch {output}"
""")
    jobs = _dry_run_jobs(work, "later/gpu.txt", "later/qos.txt", "later/cpu.txt")
    later_gpu = next(job for job in jobs if job["rule"] == "later_gpu")
    assert {k: later_gpu["resources"].get(k) for k in SITE} == SITE and later_gpu["resources"]["gpu"] == "2"
    assert _site_problems(jobs) == {
        "later_gpu_own_qos": {"qos": "short"},
        "later_cpu_without_helper": {"gpu_model": "a100"},
    }
