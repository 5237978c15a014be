"""MLflow as a place to compare runs: the runs view, sortable sweeps, metric names that say what was
measured, per-class IoU, run time without the queue, and run folders that keep working when moved."""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
import pytest

from emanet.tracking import Tracker, metrics_from_mlflow, read_run_info, sync_run
from tests.helpers.mlflow_server import MlflowServer

EXPERIMENT = "emanet/test/voc"


@pytest.fixture(autouse=True)
def _fast_client(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield srv
    srv.stop()


def _run_folder(root: Path, name: str, bases: int, uri: str, eval_dataset: str | None = None,
                split: str = "val") -> Path:
    """A finished run folder as train + evaluate leave it (without the training)."""
    run_dir = root / "results" / "runs" / name
    run_dir.mkdir(parents=True)
    (run_dir / "train_log.csv").write_text("iteration,loss,lr,images_per_s,elapsed_s,data_s,step_s,max_memory_mib\n"
                                           "5,1.5,0.01,30.0,1.0,0.01,0.1,\n10,1.0,0.009,31.0,2.0,0.01,0.1,\n")
    params = {"model.ema.num_bases": bases, "train.iterations": 10, "train.log_interval": 5,
              "eval.dataset": eval_dataset, "eval.split": split, "train.amp": "none"}
    (run_dir / "run.json").write_text(json.dumps({
        "dataset": "voc", "train": {"started": "2026-01-02T03:04:05+00:00", "finished": "2026-01-02T04:04:05+00:00"}}))
    Tracker(run_dir, True, uri, EXPERIMENT, name, params, {"experiment": name})
    metrics = {"protocol": "ss", "split": split, "miou": 0.5 + bases / 1000, "pixel_acc": 0.9, "mean_acc": 0.6,
               "fwiou": 0.8, "per_class": {"background": 0.9, "aeroplane": 0.25, "tv/monitor": None}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    info = read_run_info(run_dir)
    info["finished"] = True
    (run_dir / "run.json").write_text(json.dumps(info))
    return run_dir


def _get(url: str, path: str, **query) -> dict:
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}", timeout=30) as r:
        return json.loads(r.read())


def test_runs_view_sortable_sweep_named_metrics_and_run_time(tmp_path, server):
    folders = {k: _run_folder(tmp_path / f"k{k}", f"k{k}", k, server.url) for k in (128, 16, 256, 32, 64)}
    for folder in folders.values():
        sync_run(folder)
    experiment = _get(server.url, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    tags = {t["key"]: t["value"] for t in experiment["tags"]}
    assert tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens the runs table
    mlflow.set_tracking_uri(server.url)
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT], order_by=["metrics.`hp/model.ema.num_bases` ASC"])
    assert list(runs["tags.mlflow.runName"]) == ["k16", "k32", "k64", "k128", "k256"]
    assert "metrics.hp/train.log_interval" not in runs.columns  # operational, not a setting compared
    run = runs.iloc[0]
    assert run["metrics.voc_val/ss/miou"] == pytest.approx(0.516)
    assert run["metrics.voc_val/ss/iou/aeroplane"] == pytest.approx(0.25)
    assert "metrics.voc_val/ss/iou/tv/monitor" not in runs.columns  # absent from the split: no value
    assert "metrics.ss/miou" not in runs.columns
    assert run["params.model.ema.num_bases"] == "16"  # the params stay as they were
    client = mlflow.MlflowClient(server.url)
    info = client.get_run(run["run_id"]).info
    assert info.status == "FINISHED"
    assert (info.start_time, info.end_time) == (1767323045000, 1767326645000)  # training's hour, not the queue
    sync_run(folders[16])  # a later evaluation's sync keeps the training's end time
    assert client.get_run(run["run_id"]).info.end_time == 1767326645000
    summary = metrics_from_mlflow(server.url, [EXPERIMENT])
    assert summary["k16"]["ss"] == pytest.approx(0.516)


def test_test_split_runs_are_named_apart(tmp_path, server):
    folder = _run_folder(tmp_path, "trainval", 64, server.url, eval_dataset="voc_test", split="test")
    run_id = sync_run(folder)
    assert "voc_test/ss/miou" in mlflow.MlflowClient(server.url).get_run(run_id).data.metrics


def test_a_moved_project_keeps_its_store(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    run_dir = _run_folder(project, "k64", 64, "sqlite:///mlflow.db")
    run_id = sync_run(run_dir)
    stored = read_run_info(run_dir)["tracking_uri"]
    assert stored == "sqlite:///../../../mlflow.db" and str(tmp_path) not in json.dumps(read_run_info(run_dir))
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(project, moved)
    shutil.rmtree(project)
    monkeypatch.chdir(tmp_path)  # run from anywhere: the run folder finds its store
    assert sync_run(moved / "results/runs/k64") == run_id
    assert not (tmp_path / "mlflow.db").exists() and not project.exists()
    runs = mlflow.MlflowClient(f"sqlite:///{moved / 'mlflow.db'}").search_runs(
        [mlflow.MlflowClient(f"sqlite:///{moved / 'mlflow.db'}").get_experiment_by_name(EXPERIMENT).experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]


def test_a_read_only_uri_leaves_no_folder_in_the_working_directory(tmp_path, monkeypatch):
    """MLflow made a folder named 'file:' under the working directory for sqlite:///file:...?mode=ro URIs."""
    store = tmp_path / "store" / "mlflow.db"
    store.parent.mkdir()
    mlflow.MlflowClient(f"sqlite:///{store}").search_experiments()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    run_dir = tmp_path / "runs" / "x"
    run_dir.mkdir(parents=True)
    Tracker(run_dir, True, f"sqlite:///file:{store}?mode=ro&uri=true", EXPERIMENT, "x", {}, {})
    assert os.listdir(work) == []
