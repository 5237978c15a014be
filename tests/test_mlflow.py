"""MLflow against a real `mlflow server` (sqlite backend) on 127.0.0.1, and a server that is down."""

from __future__ import annotations

import json
import re

import mlflow
import pytest

from tests.helpers.mlflow_server import MlflowServer, free_port
from tests.helpers.runs import emanet, run_args

SHORT = (
    "train.iterations=20",
    "train.batch_size=4",
    "train.checkpoint_interval=10",
    "train.log_interval=5",
    "tracking.enabled=true",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield srv
    srv.stop()


def _runs(url: str):
    mlflow.set_tracking_uri(url)
    return mlflow.search_runs(experiment_names=["emanet/tiny/voc"])


@pytest.mark.slow
def test_training_and_evaluation_are_recorded(tmp_path, prepared_root, server):
    env = {"MLFLOW_TRACKING_URI": server.url}
    for command in ("train", "evaluate"):
        proc = emanet(run_args(command, tmp_path, prepared_root, *SHORT), env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "runs/ema512/run.json").read_text())
    runs = _runs(server.url)
    run = runs[runs["run_id"] == info["mlflow_run_id"]].iloc[0]
    assert run["params.model.ema.num_bases"] == "64" and run["params.train.iterations"] == "20"
    assert run["tags.training_identity"] == info["identity"]["training"]["digest"]
    assert run["tags.data_checksum"] == info["data_checksum"]
    assert run["tags.experiment"] == "ema512" and run["tags.git_commit"]
    assert run["status"] == "FINISHED"
    metrics = json.loads((tmp_path / "runs/ema512/metrics.json").read_text())
    assert run["metrics.voc_val/ss/miou"] == pytest.approx(metrics["miou"])
    assert run["metrics.hp/model.ema.num_bases"] == 64
    assert json.loads((tmp_path / "runs/ema512/run.json").read_text())["tracking_uri"] == server.url
    client = mlflow.MlflowClient(server.url)
    assert [m.step for m in client.get_metric_history(info["mlflow_run_id"], "train/loss")] == [5, 10, 15, 20]
    artifacts = {a.path for a in client.list_artifacts(info["mlflow_run_id"])}
    assert {"metrics.json", "per_class.csv", "config.yaml", "train_log.csv"} <= artifacts


@pytest.mark.slow
def test_a_down_server_does_not_stop_training_and_sync_replays_it(tmp_path, prepared_root, server):
    dead = f"http://127.0.0.1:{free_port()}"
    proc = emanet(run_args("train", tmp_path, prepared_root, *SHORT), env={"MLFLOW_TRACKING_URI": dead})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "is unreachable" in proc.stderr and "emanet track sync" in proc.stderr
    assert (tmp_path / "runs/ema512/model.pt").exists()
    synced = emanet(["track", "sync", str(tmp_path / "runs/ema512"), "--tracking-uri", server.url])
    assert synced.returncode == 0, synced.stderr[-3000:]
    run_id = json.loads((tmp_path / "runs/ema512/run.json").read_text())["mlflow_run_id"]
    client = mlflow.MlflowClient(server.url)
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [5, 10, 15, 20]
    again = emanet(["track", "sync", str(tmp_path / "runs/ema512"), "--tracking-uri", server.url])
    assert again.returncode == 0
    assert len(client.get_metric_history(run_id, "train/loss")) == 4, "sync is idempotent"


def test_tracking_off_writes_no_store(tmp_path, prepared_root):
    proc = emanet(
        run_args("train", tmp_path, prepared_root, "train.iterations=2", "train.batch_size=2", "train.log_interval=1")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_json = tmp_path / "runs/ema512/run.json"
    info = json.loads(run_json.read_text())
    assert info.get("mlflow_run_id") is None
    # a run folder trained with tracking on (and copied away from its store): run.json names the store, and
    # an evaluation with tracking.enabled=false must not create or log to it
    run_json.write_text(json.dumps({**info, "tracking_uri": "sqlite:///../../elsewhere/mlflow.db"}))
    proc = emanet(
        run_args(
            "evaluate", tmp_path, prepared_root, "train.iterations=2", "train.batch_size=2", "train.log_interval=1"
        )
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "runs/ema512/metrics.json").exists()
    assert not (tmp_path / "elsewhere").exists() and "mlflow_run_id" not in json.loads(run_json.read_text())


@pytest.mark.slow
def test_store_states_through_a_server_are_refusals_not_outages(tmp_path, server, capsys):
    """Deleted experiment, deleted run and renamed experiment answered by a real server (REST): each is
    reported with its fix, exit status 2, no traceback; after the fix the sync goes through."""
    from emanet.cli import main
    from emanet.tracking import StoreRefused, Tracker, sync_run

    run_dir = tmp_path / "runs" / "ema512"
    run_dir.mkdir(parents=True)
    (run_dir / "train_log.csv").write_text("iteration,loss\n1,0.9\n2,0.8\n")
    name = f"emanet/states/{tmp_path.name}"
    tracker = Tracker(run_dir, True, server.url, name, "ema512", {"a": 1}, {"experiment": "ema512"})
    assert tracker.online
    client = mlflow.MlflowClient(server.url)
    experiment_id, run_id = client.get_experiment_by_name(name).experiment_id, tracker.run_id
    breaks = [
        (
            lambda: client.delete_experiment(experiment_id),
            lambda: client.restore_experiment(experiment_id),
            f"experiments restore --experiment-id {experiment_id}",
        ),
        (lambda: client.delete_run(run_id), lambda: client.restore_run(run_id), f"runs restore --run-id {run_id}"),
        (
            lambda: client.rename_experiment(experiment_id, name + "-renamed"),
            lambda: client.rename_experiment(experiment_id, name),
            f"--new-name '{name}'",
        ),
    ]
    for break_it, fix_it, fix_text in breaks:
        break_it()
        with pytest.raises(StoreRefused, match=re.escape(fix_text)):
            sync_run(run_dir)
        assert main(["track", "sync", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert fix_text in err and "Traceback" not in err and "unreachable" not in err
        fix_it()
        assert sync_run(run_dir) == run_id
