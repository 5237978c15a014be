"""MLflow answers that are not outages, on real stores: SQLite files in tmp_path, and for HTTP answers
that a local store cannot give (401, 403, 503, a proxy's 502) a tiny HTTP server on 127.0.0.1.

A refusal (deleted or renamed experiment, deleted run, permission denied, read-only or foreign
database, old schema, a refused value) is reported once with the store's message and the fix, never
retried, and ``emanet track sync`` exits 2 with that message; an outage is still retried.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pytest

from emanet.cli import main
from emanet.tracking import StoreRefused, StoreUnreachable, Tracker, read_run_info, sync_run
from tests.helpers.mlflow_server import free_port
from tests.helpers.runs import emanet

EXPERIMENT = "emanet/test/voc"


@pytest.fixture(autouse=True)
def _fast_client(monkeypatch):
    """What the tracker sets for itself, set here so the test leaves the environment as it found it."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """A fresh MLflow SQLite store, made once (its migrations take seconds) and copied per test."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path, empty_store) -> str:
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _run_dir(root: Path, iterations: int = 2) -> Path:
    """A run folder as training leaves it: run.json (written by the Tracker) and train_log.csv."""
    run_dir = root / "runs" / "ema512"
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{i},{1.0 / i:.4f}\n" for i in range(1, iterations + 1))
    (run_dir / "train_log.csv").write_text("iteration,loss\n" + rows)
    return run_dir


def _tracker(run_dir: Path, uri: str) -> Tracker:
    tracker = Tracker(run_dir, True, uri, EXPERIMENT, "ema512", {"model.ema.num_bases": 64}, {"experiment": "ema512"})
    tracker.RETRY_SECONDS = 0  # every call may retry: a refusal must still not be retried
    return tracker


def _append_log(run_dir: Path, iteration: int) -> dict[str, float]:
    with open(run_dir / "train_log.csv", "a") as handle:
        handle.write(f"{iteration},{1.0 / iteration:.4f}\n")
    return {"train/loss": round(1.0 / iteration, 4)}


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "emanet.tracking"]


def _steps(uri: str, run_id: str) -> list[int]:
    return sorted(m.step for m in mlflow.MlflowClient(uri).get_metric_history(run_id, "train/loss"))


def _sync_cli(run_dir: Path, capsys, uri: str | None = None) -> tuple[int, str]:
    rc = main(["track", "sync", str(run_dir), *(["--tracking-uri", uri] if uri else [])])
    return rc, capsys.readouterr().err


# --- deleted experiment, deleted run, renamed experiment ---------------------------------------------------


def test_deleted_experiment_during_training_is_reported_once_and_not_retried(tmp_path, store, caplog, capsys):
    run_dir = _run_dir(tmp_path)
    tracker = _tracker(run_dir, store)
    assert tracker.online
    client = mlflow.MlflowClient(store)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    client.delete_experiment(experiment_id)

    caplog.set_level(logging.WARNING)
    for iteration in (3, 4, 5):
        tracker.log_metrics(_append_log(run_dir, iteration), iteration)
    tracker.finish()
    (warning,) = _warnings(caplog)
    assert "is deleted" in warning and EXPERIMENT in warning
    assert f"mlflow experiments restore --experiment-id {experiment_id}" in warning
    assert f"emanet track sync {run_dir}" in warning and "unreachable" not in warning
    assert isinstance(tracker.refused, StoreRefused) and not tracker.online

    rc, err = _sync_cli(run_dir, capsys)
    assert rc == 2 and err.startswith("emanet: error: ") and "Traceback" not in err
    assert f"experiments restore --experiment-id {experiment_id}" in err

    client.restore_experiment(experiment_id)  # the fix the message gives; then the replay is complete
    run_id = read_run_info(run_dir)["mlflow_run_id"]
    assert _steps(store, run_id) == [1, 2], "nothing was logged after the refusal (not retried)"
    rc, err = _sync_cli(run_dir, capsys)
    assert rc == 0, err
    assert _steps(store, run_id) == [1, 2, 3, 4, 5]
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_sync_of_a_run_whose_experiment_was_deleted_with_the_mlflow_cli(tmp_path, store):
    """The reported case end to end: `mlflow experiments delete`, then `emanet track sync` as a user runs them."""
    run_dir = _run_dir(tmp_path)
    _tracker(run_dir, store)
    experiment_id = mlflow.MlflowClient(store).get_experiment_by_name(EXPERIMENT).experiment_id
    env = {"MLFLOW_TRACKING_URI": store}
    cli = Path(sys.executable).parent / "mlflow"
    subprocess.run(
        [str(cli), "experiments", "delete", "--experiment-id", experiment_id],
        check=True,
        env=dict(os.environ, **env),
        capture_output=True,
    )
    proc = emanet(["track", "sync", str(run_dir)], env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "must be in the 'active' state" not in proc.stderr
    assert f"mlflow experiments restore --experiment-id {experiment_id}" in proc.stderr
    # The other fix the message gives, as given: remove the experiment for good, then sync starts afresh.
    gc = f"mlflow gc --backend-store-uri '{store}' --experiment-ids {experiment_id}"
    assert gc in proc.stderr
    subprocess.run(shlex.split(gc.replace("mlflow", str(cli), 1)), check=True, capture_output=True)
    old_run = read_run_info(run_dir)["mlflow_run_id"]
    proc = emanet(["track", "sync", str(run_dir)], env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    new_run = read_run_info(run_dir)["mlflow_run_id"]
    assert new_run != old_run and _steps(store, new_run) == [1, 2]


def test_deleted_run_is_reported_with_the_restore_command(tmp_path, store, caplog, capsys):
    run_dir = _run_dir(tmp_path)
    tracker = _tracker(run_dir, store)
    run_id = tracker.run_id
    client = mlflow.MlflowClient(store)
    client.delete_run(run_id)
    caplog.set_level(logging.WARNING)
    tracker.log_metrics(_append_log(run_dir, 3), 3)
    tracker.log_metrics(_append_log(run_dir, 4), 4)
    (warning,) = _warnings(caplog)
    assert f"run {run_id} is deleted" in warning and f"mlflow runs restore --run-id {run_id}" in warning
    rc, err = _sync_cli(run_dir, capsys)
    assert rc == 2 and f"mlflow runs restore --run-id {run_id}" in err and "Traceback" not in err
    client.restore_run(run_id)
    assert _sync_cli(run_dir, capsys)[0] == 0
    assert _steps(store, run_id) == [1, 2, 3, 4]


def test_run_removed_for_good_is_logged_again_as_a_new_run(tmp_path, store):
    """Not a refusal: after `mlflow gc` the run id is unknown to the store, like one from another server."""
    run_dir = _run_dir(tmp_path)
    old = _tracker(run_dir, store).run_id
    client = mlflow.MlflowClient(store)
    client.delete_run(old)
    client._tracking_client.store._hard_delete_run(old)  # what `mlflow gc` does
    new = sync_run(run_dir)
    assert new != old and _steps(store, new) == [1, 2]


def test_renamed_experiment_is_reported_with_the_rename_command(tmp_path, store, capsys):
    run_dir = _run_dir(tmp_path)
    _tracker(run_dir, store)
    client = mlflow.MlflowClient(store)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    client.rename_experiment(experiment_id, "someone/else")
    rc, err = _sync_cli(run_dir, capsys)
    assert rc == 2 and "Traceback" not in err
    assert "'someone/else'" in err and f"--experiment-id {experiment_id} --new-name '{EXPERIMENT}'" in err
    client.rename_experiment(experiment_id, EXPERIMENT)
    assert _sync_cli(run_dir, capsys)[0] == 0


def test_changing_the_experiment_name_in_params_starts_a_run_there(tmp_path, store):
    """tracking.experiment changed on purpose: MLflow cannot move a run, so the folder goes to a new run."""
    run_dir = _run_dir(tmp_path)
    old = _tracker(run_dir, store).run_id
    tracker = Tracker(run_dir, True, store, "emanet/renamed/voc", "ema512", {}, {})
    assert tracker.online and tracker.run_id != old
    run = mlflow.MlflowClient(store).get_run(tracker.run_id)
    assert mlflow.MlflowClient(store).get_experiment(run.info.experiment_id).name == "emanet/renamed/voc"


# --- the store file: read-only, not a database, old schema --------------------------------------------------


def test_read_only_store_is_refused_with_the_sqlite_answer(tmp_path, store, caplog, capsys):
    run_dir = _run_dir(tmp_path)
    path = store[len("sqlite:///") :]
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"  # as a read-only file behaves, even for root
    caplog.set_level(logging.WARNING)
    tracker = _tracker(run_dir, read_only)
    tracker.log_metrics(_append_log(run_dir, 3), 3)
    tracker.finish()
    (warning,) = _warnings(caplog)
    assert "SQLITE_READONLY" in warning and "readonly database" in warning and "chmod" in warning
    rc, err = _sync_cli(run_dir, capsys, read_only)
    assert rc == 2 and "SQLITE_READONLY" in err and "Traceback" not in err and "[SQL" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files")
def test_read_only_file_is_refused(tmp_path, store, capsys):
    run_dir = _run_dir(tmp_path)
    path = Path(store[len("sqlite:///") :])
    _tracker(run_dir, store)
    path.chmod(0o444)
    _append_log(run_dir, 3)
    rc, err = _sync_cli(run_dir, capsys)
    assert rc == 2 and "SQLITE_READONLY" in err and "chmod" in err and "Traceback" not in err


def test_a_file_that_is_not_a_database_is_refused(tmp_path, capsys):
    run_dir = _run_dir(tmp_path)
    (tmp_path / "notes.db").write_text("these are my notes, not an MLflow store\n" * 50)
    _tracker(run_dir, f"sqlite:///{tmp_path / 'notes.db'}")
    rc, err = _sync_cli(run_dir, capsys)
    assert rc == 2 and "SQLITE_NOTADB" in err and "not an SQLite database" in err and "Traceback" not in err


def test_out_of_date_schema_is_refused_with_the_upgrade_command(tmp_path, store, caplog, capsys):
    older = _set_older_schema(store)
    run_dir = _run_dir(tmp_path)
    caplog.set_level(logging.WARNING)
    tracker = _tracker(run_dir, store)
    tracker.log_metrics(_append_log(run_dir, 3), 3)
    (warning,) = _warnings(caplog)
    assert f"mlflow db upgrade {store}" in warning and older in warning
    rc, err = _sync_cli(run_dir, capsys)
    assert rc == 2 and f"mlflow db upgrade {store}" in err and "Traceback" not in err


def test_refused_values_and_unknown_schemes_are_not_outages(tmp_path, store, capsys):
    run_dir = _run_dir(tmp_path)
    (run_dir / "train_log.csv").write_text("iteration,loss,bad|name\n1,0.5,1.0\n")
    _tracker(run_dir, store)  # refused on connect: warns, does not raise
    rc, err = _sync_cli(run_dir, capsys)
    assert rc == 2 and "INVALID_PARAMETER_VALUE" in err and "bad|name" in err and "Traceback" not in err
    with pytest.raises(StoreRefused, match="INVALID_PARAMETER_VALUE"):
        sync_run(run_dir, "nosuchscheme://host/path")


# --- HTTP answers: permission denied vs outages ---------------------------------------------------------------


class _Stub:
    """An HTTP server on 127.0.0.1 answering every request with one status and body; counts requests."""

    def __init__(self, status: int, body: str, content_type: str = "application/json"):
        stub = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                stub.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    "status, body, code",
    [
        (403, "Forbidden", "PERMISSION_DENIED"),  # a proxy's bare 403
        (
            403,
            json.dumps(
                {
                    "error_code": "PERMISSION_DENIED",  # MLflow's auth app
                    "message": "Permission denied for this experiment",
                }
            ),
            "PERMISSION_DENIED",
        ),
        (401, "You are not authenticated.", "UNAUTHENTICATED"),
    ],
)
def test_permission_denied_is_reported_once_and_not_retried(tmp_path, caplog, capsys, status, body, code):
    run_dir = _run_dir(tmp_path)
    with _Stub(status, body, "application/json" if body.startswith("{") else "text/plain") as stub:
        caplog.set_level(logging.WARNING)
        tracker = _tracker(run_dir, stub.url)
        asked = stub.requests
        assert asked >= 1 and tracker.refused is not None
        for iteration in (3, 4, 5):
            tracker.log_metrics(_append_log(run_dir, iteration), iteration)
        tracker.finish()
        assert stub.requests == asked, "a refusal is not retried"
        (warning,) = _warnings(caplog)
        assert code in warning and "MLFLOW_TRACKING_USERNAME" in warning and "unreachable" not in warning
        if body.startswith("{"):
            assert "Permission denied for this experiment" in warning, "the server's own message is shown"
        rc, err = _sync_cli(run_dir, capsys)
        assert rc == 2 and code in err and "Traceback" not in err


@pytest.mark.parametrize(
    "status, body",
    [
        (503, json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "database is locked"})),
        (502, "<html>Bad Gateway</html>"),  # a proxy before a dead server
    ],
)
def test_server_errors_are_outages_and_retried(tmp_path, caplog, capsys, status, body):
    run_dir = _run_dir(tmp_path)
    with _Stub(status, body) as stub:
        caplog.set_level(logging.WARNING)
        tracker = _tracker(run_dir, stub.url)
        assert tracker.refused is None and not tracker.online
        asked = stub.requests
        for iteration in (3, 4):
            tracker.log_metrics(_append_log(run_dir, iteration), iteration)
        assert stub.requests >= asked + 2, "an outage is retried"
        (warning,) = _warnings(caplog)
        assert "is unreachable" in warning and f"{status} error" in warning, "the answer is shown, not a class name"
        rc, err = _sync_cli(run_dir, capsys)
        assert rc == 2 and "is unreachable" in err and "Traceback" not in err


def test_connection_refused_is_an_outage(tmp_path):
    run_dir = _run_dir(tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"
    tracker = _tracker(run_dir, dead)
    assert tracker.refused is None and not tracker.online
    with pytest.raises(StoreUnreachable, match="is unreachable"):
        sync_run(run_dir, dead)


@pytest.mark.slow
def test_a_busy_database_is_an_outage_and_the_run_catches_up(tmp_path, store):
    """Another writer holds the SQLite file (SQLITE_BUSY after the driver's 5 s wait): retried, not refused."""
    run_dir = _run_dir(tmp_path)
    tracker = _tracker(run_dir, store)
    tracker.RETRY_SECONDS = 3600  # one blocked write, no reconnection while the lock is held
    holder = sqlite3.connect(store[len("sqlite:///") :], isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        tracker.log_metrics(_append_log(run_dir, 3), 3)
        assert tracker.refused is None and not tracker.online
        print(f"blocked for {time.monotonic() - started:.1f} s")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    tracker.RETRY_SECONDS = 0
    tracker.log_metrics(_append_log(run_dir, 4), 4)
    assert tracker.online and _steps(store, tracker.run_id) == [1, 2, 3, 4]


def _set_older_schema(uri: str) -> str:
    """Record an older schema revision in the store, as a store left by an older MLflow whose missing
    migrations add no table (MLflow then refuses it); return that revision."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    scripts = ScriptDirectory.from_config(_get_alembic_config(uri))
    older = scripts.get_revision(scripts.get_current_head()).down_revision
    with sqlite3.connect(uri[len("sqlite:///") :]) as db:
        db.execute("UPDATE alembic_version SET version_num = ?", (older,))
    return older


@pytest.mark.slow
def test_tracking_server_on_an_out_of_date_backend_says_so(tmp_path, store):
    _set_older_schema(store)
    proc = emanet(
        [
            "tracking-server",
            "--backend-store-uri",
            store,
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--port",
            str(free_port()),
            "--workers",
            "1",
        ],
        timeout=240,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "exited with status" in proc.stderr
    assert "out-of-date database schema" in proc.stderr and f"mlflow db upgrade {store}" in proc.stderr
