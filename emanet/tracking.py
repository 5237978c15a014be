"""MLflow: one experiment per profile and dataset, one run per (experiment, profile) run folder.

Everything a run produces is first written to its run folder (``train_log.csv``, ``metrics*.json``,
per-class CSVs, plots, ``run.json``); MLflow is a mirror of the folder. That makes tracking optional
and failure-tolerant: if the server is unreachable the tracker warns once, training goes on, and the
next successful contact (or ``emanet track sync RUN_DIR``) replays whatever is missing from the folder.
Only rank 0 tracks. The run id is kept in ``run.json`` so a resumed training continues the same run.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Fail fast instead of retrying for minutes while training waits (MLflow's defaults: 7 retries, 120 s).
_CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
ARTIFACT_SUFFIXES = (".json", ".csv", ".png", ".yaml", ".gz")  # .gz: the VOC test submission


def default_uri(project: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI``, else a sqlite store at the project root (what ``mlflow ui`` opens there)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(project or Path.cwd()).resolve()}/mlflow.db"


def git_commit(cwd: Path | None = None) -> str:
    """HEAD's commit, suffixed ``-dirty`` when tracked files have uncommitted changes; ``unknown`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def read_run_info(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    from emanet.io import atomic_write_json

    atomic_write_json(run_dir / "run.json", info)


def _client(uri: str):
    import mlflow

    for key, value in _CLIENT_ENV.items():
        os.environ.setdefault(key, value)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def _experiment_id(client, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # keep artifacts beside the database, not in whatever cwd is
        location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def sync_run(run_dir: str | Path, uri: str | None = None) -> str:
    """Mirror a run folder into MLflow: create or reuse its run, log what the server lacks; return the run id.

    Idempotent: parameters are set once, metric points are logged only for (key, step) pairs the server
    does not have yet, artifacts are re-uploaded (same names).
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    if not info:
        raise FileNotFoundError(f"{run_dir / 'run.json'}: not a run folder (nothing to sync)")
    uri = uri or info.get("tracking_uri") or default_uri()
    client = _client(uri)
    run_id = info.get("mlflow_run_id")
    if run_id:
        try:
            client.get_run(run_id)
        except Exception:  # a run id from another server: start afresh there
            run_id = None
    if not run_id:
        run = client.create_run(_experiment_id(client, info["mlflow_experiment"], uri), run_name=info["run_name"],
                                tags=info.get("tags", {}))
        run_id = run.info.run_id
        info.update(mlflow_run_id=run_id, tracking_uri=uri)
        _write_run_info(run_dir, info)
    _replay(client, run_id, run_dir, info)
    return run_id


def _replay(client, run_id: str, run_dir: Path, info: dict[str, Any]) -> None:
    from mlflow.entities import Metric, Param, RunTag

    run = client.get_run(run_id)
    params = [Param(k, str(v)[:6000]) for k, v in info.get("params", {}).items() if k not in run.data.params]
    tags = [RunTag(k, str(v)) for k, v in info.get("tags", {}).items()]
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=params[start:start + 100])
    if tags:
        client.log_batch(run_id, tags=tags)
    points = _metric_points(run_dir)
    have = {key: {m.step for m in client.get_metric_history(run_id, key)} for key in {k for k, _, _ in points}}
    now = int(time.time() * 1000)
    missing = [Metric(k, v, now, step) for k, step, v in points if step not in have[k]]
    for start in range(0, len(missing), 500):
        client.log_batch(run_id, metrics=missing[start:start + 500])
    for path in sorted(run_dir.iterdir()):
        if path.is_file() and path.suffix in ARTIFACT_SUFFIXES:
            client.log_artifact(run_id, str(path))
    if info.get("finished"):
        client.set_terminated(run_id, "FINISHED")


def _metric_points(run_dir: Path) -> list[tuple[str, int, float]]:
    """(key, step, value) from train_log.csv and every metrics*.json (final metrics at step 0)."""
    points = []
    log_file = run_dir / "train_log.csv"
    if log_file.exists():
        with open(log_file, newline="") as handle:
            for row in csv.DictReader(handle):
                step = int(row["iteration"])
                points += [(f"train/{k}", step, float(v)) for k, v in row.items() if k != "iteration"]
    for path in sorted(run_dir.glob("metrics*.json")):
        metrics = json.loads(path.read_text())
        protocol = metrics.get("protocol", path.stem)
        for key in ("miou", "pixel_acc", "mean_acc", "fwiou"):
            if metrics.get(key) is not None:
                points.append((f"{protocol}/{key}", 0, float(metrics[key])))
    return points


class Tracker:
    """Rank 0's tracker for one run folder; every MLflow failure is caught, and later replayed."""

    #: how long to wait before trying a lost server again (EMANET_TRACKING_RETRY_SECONDS overrides)
    RETRY_SECONDS = float(os.environ.get("EMANET_TRACKING_RETRY_SECONDS", "30"))

    def __init__(self, run_dir: Path, enabled: bool, uri: str | None, experiment: str, run_name: str,
                 params: dict[str, Any], tags: dict[str, str]):
        self.run_dir, self.enabled = run_dir, enabled
        self.uri = uri or default_uri()
        info = read_run_info(run_dir)
        info.update(mlflow_experiment=experiment, run_name=run_name, params=params,
                    tags={**info.get("tags", {}), **tags}, tracking_uri=self.uri if enabled else None)
        info.setdefault("finished", False)
        _write_run_info(run_dir, info)
        self.online, self._last_try, self._warned = False, 0.0, False
        self.run_id, self.client = None, None
        if enabled:
            self._connect()

    def _connect(self) -> None:
        """Replay the whole run folder; on success log new points directly from then on."""
        self._last_try = time.monotonic()
        try:
            self.run_id = sync_run(self.run_dir, self.uri)
            self.client = _client(self.uri)
            if not self.online and self._warned:
                log.warning("MLflow at %s answers again; missed logging replayed", self.uri)
                self._warned = False
            self.online = True
        except Exception as exc:  # noqa: BLE001 - a failing tracking server must not stop training
            self._went_offline(exc)

    def _went_offline(self, exc: Exception) -> None:
        self.online = False
        if not self._warned:
            log.warning("MLflow at %s is unreachable (%s): training goes on; the run folder keeps everything "
                        "and is replayed when the server answers again (or run `emanet track sync %s`)",
                        self.uri, exc.__class__.__name__, self.run_dir)
            self._warned = True

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log points that are already in the run folder; retry a lost server every RETRY_SECONDS."""
        if not self.enabled:
            return
        if self.online:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            try:
                self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])
                return
            except Exception as exc:  # noqa: BLE001
                self._went_offline(exc)
        if time.monotonic() - self._last_try >= self.RETRY_SECONDS:
            self._connect()

    def finish(self) -> None:
        """Mark the run finished and mirror everything (artifacts included)."""
        info = read_run_info(self.run_dir)
        info["finished"] = True
        _write_run_info(self.run_dir, info)
        if self.enabled:
            self._connect()


def metrics_from_mlflow(uri: str, experiment_names: list[str]) -> dict[str, dict]:
    """{experiment: {"run_id", protocol: mIoU in [0, 1], ...}} from ``mlflow.search_runs`` alone
    (the newest finished run of each experiment), to rebuild tables without the run folders.
    MLflow experiments that do not exist (a dataset nobody trained on yet) are skipped."""
    import mlflow

    _client(uri)
    runs = mlflow.search_runs(experiment_names=experiment_names, filter_string="attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"])
    found: dict[str, dict] = {}
    for _, run in runs.iterrows():
        name = run.get("tags.experiment")
        if not name or name in found:
            continue
        metrics = {col[len("metrics."):-len("/miou")]: float(run[col]) for col in runs.columns
                   if col.startswith("metrics.") and col.endswith("/miou") and run[col] == run[col]}
        found[name] = {"run_id": run["run_id"], **metrics}
    return found
