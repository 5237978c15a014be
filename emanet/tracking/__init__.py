"""MLflow: one experiment per profile and dataset, one run per (experiment, profile) run folder.

Everything a run produces is first written to its run folder (``train_log.csv``, ``metrics*.json``,
per-class CSVs, plots, ``run.json``); MLflow is a mirror of the folder. That makes tracking optional
and failure-tolerant: if the server is unreachable the tracker warns once, training goes on, and the
next successful contact (or ``emanet track sync RUN_DIR``) replays whatever is missing from the folder.
Only rank 0 tracks. The run id is kept in ``run.json`` so a resumed training continues the same run.

Not every failure is an outage. MLflow answers that waiting will not change (a deleted or renamed
experiment, a deleted run, permission denied, a read-only or foreign SQLite file, a schema older than
this MLflow, a value it refuses) are :class:`StoreRefused`: reported once with the store's message and
the fix, never retried; ``emanet track sync`` exits with status 2 and that message. Connection
failures, timeouts, server errors and a busy database are :class:`StoreUnreachable` and retried.
The two are told apart by MLflow's own error codes (``MlflowException.error_code``) and, for SQLite
stores, by SQLite's result codes (``sqlite3.Error.sqlite_errorname``); the one MLflow failure without
a code of its own, the schema check, is recognised by the command its message prescribes.

What a comparison of runs needs is where MLflow's runs table shows it: experiments carry MLflow 3's
``mlflow.experimentKind`` = ``custom_model_development`` (MLflow 3.17's UI follows the browser's workflow
choice instead; the saved views' links carry ``workflowType=machine_learning``);
evaluation results are metrics named by dataset, split and protocol (``voc_val/ss/miou``, and per class
``voc_val/ss/iou/aeroplane``); every numeric setting is also a metric ``hp/<key>`` (``model.ema.*`` only
for runs with the EMA head: :func:`tracked_params`; MLflow keeps params
as strings and sorts them as text: 128 < 16 < 256; a metric sorts as a number, the MLflow maintainers'
advice in mlflow/mlflow#6348). A run lasts from the start to the end of its training, as ``run.json``
records them, however long it waited for its evaluation. Where a local SQLite store lives (kept relative
to the run folder in ``run.json``), and following it when the project is moved: :mod:`emanet.tracking.store`.
Every sync also rewrites the experiment's saved views (:mod:`emanet.tracking.views`): each paper
table's runs sorted by what the table sweeps, with their mIoU columns, linked from the experiment's note.
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from emanet.logfilters import drop_records
from emanet.tracking.store import artifacts_beside, follow_moved_store, guard_uri_filenames, portable_uri, resolved_uri

log = logging.getLogger(__name__)

# Fail fast instead of retrying for minutes while training waits (MLflow's defaults: 7 retries, 120 s).
_CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
ARTIFACT_SUFFIXES = (".json", ".csv", ".png", ".yaml", ".gz")  # .gz: the VOC test submission
#: the experiment kind (the runs table, not GenAI traces); MLflow 3.17's UI lets the browser's workflow
#: choice (GenAI by default) override it: see tracking_views.WORKFLOW
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
NOTE_MARK = "emanet runs, one per experiment of params.yaml."  # how a note emanet wrote begins
#: Markdown (the UI renders it: names with <...> in code spans, or they vanish as HTML tags)
EXPERIMENT_NOTE = (
    f"{NOTE_MARK} Metrics: `<dataset>_<split>/<protocol>/miou` "
    "(a fraction; protocols `ss`, `ms_flip`, `ss_T<n>`), `.../iou/<class>` per class, `train/*` per "
    "logged iteration, `hp/<key>` the numeric settings (sortable as numbers; the same values are "
    "params). Other columns: the runs table's Columns menu."
)
#: summary values of a metrics*.json logged as metrics (the confusion matrix and per-class values aside)
SUMMARY_METRICS = ("miou", "pixel_acc", "mean_acc", "fwiou")
#: numeric settings that change how a run is executed, not what it computes: not mirrored as hp/ metrics
OPERATIONAL = (
    "data.workers",
    "train.checkpoint_interval",
    "train.log_interval",
    "train.cpu_threads",
    "train.eval_interval",
)
#: settings of one head, mirrored only for runs with that head (a run without EMA has no K to sort by)
HEAD_SETTINGS = {"ema": "model.ema."}
_METRIC_NAME_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")  # MLflow's allowed characters in a metric name


def default_uri(project: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI``, else a sqlite store at the project root (what ``mlflow ui`` opens there)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(project or Path.cwd()).resolve()}/mlflow.db"


def _ms(stamp: str | None) -> int | None:
    """Milliseconds since the epoch of an ISO 8601 time from run.json (None stays None)."""
    return int(datetime.datetime.fromisoformat(stamp).timestamp() * 1000) if stamp else None


def git_commit(cwd: Path | None = None) -> str:
    """HEAD's commit, suffixed ``-dirty`` when tracked files have uncommitted changes; ``unknown`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class TrackingStoreError(ValueError):
    """MLflow could not take a run folder; the message says what the store answered and what to do.

    A ValueError, so that the CLI reports it in one line with exit status 2.
    """


class StoreRefused(TrackingStoreError):
    """The store answered, and waiting will not change its answer: reported once, not retried."""


class StoreUnreachable(TrackingStoreError):
    """A connection failure, timeout, server error or busy database: an outage, retried later."""


#: MLflow error codes that are answers about the request or the store, each with what to do.
#: Every other code (INTERNAL_ERROR, TEMPORARILY_UNAVAILABLE, REQUEST_LIMIT_EXCEEDED, DEADLINE_EXCEEDED,
#: ...) and every connection failure (which MLflow's REST client reports as INTERNAL_ERROR) is an outage.
_PERMISSION_FIX = (
    "Give this user write access to the experiment on the server, or set MLFLOW_TRACKING_USERNAME "
    "and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) for an account that has it."
)
_ADDRESS_FIX = (
    "Check the tracking URI (tracking.uri in params.yaml, $MLFLOW_TRACKING_URI or --tracking-uri): "
    "scheme, host, port and path of an MLflow tracking server or store."
)
_REFUSAL_FIXES = {
    "PERMISSION_DENIED": _PERMISSION_FIX,
    "UNAUTHENTICATED": _PERMISSION_FIX,
    "CUSTOMER_UNAUTHORIZED": _PERMISSION_FIX,
    "ENDPOINT_NOT_FOUND": "The address answers but has no MLflow tracking API there. " + _ADDRESS_FIX,
    "NOT_FOUND": "The address answers but has no MLflow tracking API there. " + _ADDRESS_FIX,
    "FEATURE_DISABLED": "The server does not offer what tracking needs (another MLflow deployment?). " + _ADDRESS_FIX,
    "NOT_IMPLEMENTED": "The server does not offer what tracking needs (another MLflow deployment?). " + _ADDRESS_FIX,
    "RESOURCE_DOES_NOT_EXIST": "The experiment or run it names is gone from the store (removed for good?); "
    "a sync logs the run folder as a new run.",
    "INVALID_STATE": "The experiment or run is not in a state that accepts logging (see the message): "
    "restore or reopen it with the `mlflow experiments` / `mlflow runs` commands.",
    "INVALID_PARAMETER_VALUE": "MLflow refuses a name or value (the message says which): correct it in params.yaml "
    "or in the run folder's files, or check the tracking URI.",
    "BAD_REQUEST": "MLflow refuses the request (the message says why): correct the value it names, "
    "or check the tracking URI.",
    "RESOURCE_ALREADY_EXISTS": "Something of that name already exists in the store (a deleted experiment keeps its "
    "name until `mlflow gc` removes it): restore it or remove it for good.",
}

#: SQLite result codes (primary part of ``sqlite3.Error.sqlite_errorname``) of a store file that this
#: process cannot use until someone changes it. SQLITE_BUSY/LOCKED (another writer) and IOERR are outages.
_SQLITE_FIXES = {
    "SQLITE_READONLY": "The database file (or its folder, where SQLite writes its journal) is read-only for this "
    "user: make both writable (chmod u+w), or point the tracking URI at a writable store.",
    "SQLITE_PERM": "The database file (or its folder) may not be written by this user: make both writable, "
    "or point the tracking URI at a writable store.",
    "SQLITE_AUTH": "The database refuses this user: use a store it may write to.",
    "SQLITE_CANTOPEN": "The database file cannot be opened: check that its folder exists and is writable, "
    "or point the tracking URI at another file.",
    "SQLITE_NOTADB": "The file is not an SQLite database: point the tracking URI at an MLflow store "
    "(a new file name creates one).",
    "SQLITE_CORRUPT": "The database file is damaged: restore it from a backup, or point the tracking URI at "
    "another file (the run folders can be replayed into a new store with `emanet track sync`).",
    "SQLITE_FULL": "The disk holding the database is full: free space on it.",
}


def _answer(text: str, code: str | None = None, limit: int = 600) -> str:
    """The store's message, without a repeated ``CODE: `` prefix, the SQL statement or its parameters."""
    text = str(text).strip()
    if code and text.startswith(f"{code}: "):
        text = text[len(code) + 2 :]
    text = text.split("\n[SQL:")[0].strip()
    return text if len(text) <= limit else text[:limit] + " ..."


def _sqlite_error(exc: BaseException):
    """The ``sqlite3.Error`` behind an exception (through MLflow's and SQLAlchemy's wrappers), or None."""
    seen, stack = set(), [exc]
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if getattr(err, "sqlite_errorname", None):
            return err
        stack += [err.__cause__, err.__context__, getattr(err, "orig", None)]
    return None


def store_failure(exc: BaseException, uri: str, run_dir: Path | str) -> TrackingStoreError | None:
    """Classify an exception met while logging ``run_dir`` to ``uri``: :class:`StoreRefused` (with the
    store's message and the fix), :class:`StoreUnreachable`, or None for an exception that did not come
    from the store (a bug, a broken run folder: the caller lets it through)."""
    import requests
    from mlflow.exceptions import MlflowException

    then = f"Then run `emanet track sync {run_dir}`."

    def refused(code: str, message: str, fix: str) -> StoreRefused:
        return StoreRefused(f"MLflow at {uri} refused to log {run_dir} ({code}: {message}). {fix} {then}")

    def unreachable(kind: str, message: str) -> StoreUnreachable:
        return StoreUnreachable(
            f"MLflow at {uri} is unreachable ({kind}: {message}); the run folder {run_dir} keeps "
            f"everything, and `emanet track sync {run_dir}` replays it once the store answers"
        )

    sqlite = _sqlite_error(exc)
    if sqlite is not None:
        name = sqlite.sqlite_errorname
        primary = "_".join(name.split("_")[:2])
        if primary in _SQLITE_FIXES:
            return refused(name, str(sqlite), _SQLITE_FIXES[primary])
    if isinstance(exc, MlflowException):
        code, message = exc.error_code, _answer(exc.message, exc.error_code)
        if "mlflow db upgrade" in exc.message:  # MLflow's schema check raises INTERNAL_ERROR, code-less
            import mlflow

            database = "the server's backend store URI" if uri.startswith(("http://", "https://")) else uri
            return refused(
                code,
                message,
                f"The store's schema is not the one MLflow {mlflow.__version__} uses: back "
                f"the database up, then run `mlflow db upgrade {database}`; if a newer "
                "MLflow wrote it, upgrade mlflow here instead.",
            )
        if code in _REFUSAL_FIXES:
            return refused(code, message, _REFUSAL_FIXES[code])
        if sqlite is not None:
            return unreachable(sqlite.sqlite_errorname, str(sqlite))
        return unreachable(code, message)
    if isinstance(exc, (requests.RequestException, ConnectionError, TimeoutError, socket.gaierror)):
        return unreachable(type(exc).__name__, _answer(exc))
    if sqlite is not None:
        return unreachable(sqlite.sqlite_errorname, str(sqlite))
    if isinstance(exc, OSError):  # a local store's path: a file where a folder should be, no permission, ...
        return refused(type(exc).__name__, _answer(exc), "The store's path cannot be used: " + _ADDRESS_FIX)
    return None


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """The run folder's run.json (:func:`emanet.runs.folder.read_info`)."""
    from emanet.runs.folder import read_info

    return read_info(run_dir)


def _write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    from emanet.runs.folder import write_info

    write_info(run_dir, info)


def _client(uri: str):
    import mlflow

    guard_uri_filenames()
    for key, value in _CLIENT_ENV.items():
        os.environ.setdefault(key, value)
    # MLflow's SQL store logs a traceback before it raises the same error as an MlflowException, which
    # the caller reports once, with the fix (store_failure)
    drop_records("mlflow.store.db.utils", "SQLAlchemy database error")
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def _cli(uri: str, command: str) -> str:
    """An ``mlflow`` CLI command line against ``uri``."""
    return f"`MLFLOW_TRACKING_URI='{uri}' mlflow {command}`"


def _gc(uri: str, selection: str) -> str:
    """The ``mlflow gc`` command line that removes deleted experiments or runs from ``uri`` for good."""
    where = "--tracking-uri" if uri.startswith(("http://", "https://")) else "--backend-store-uri"
    return f"`mlflow gc {where} '{uri}' {selection}`"


def _deleted_experiment(experiment, uri: str, run_dir: Path) -> StoreRefused:
    eid = experiment.experiment_id
    return StoreRefused(
        f"MLflow at {uri} cannot log {run_dir}: its experiment '{experiment.name}' (id {eid}) is deleted. Restore it "
        f"(its runs come back with it): {_cli(uri, f'experiments restore --experiment-id {eid}')}; or, to start "
        f"over under that name, remove it for good: {_gc(uri, f'--experiment-ids {eid}')}. "
        f"Then run `emanet track sync {run_dir}`."
    )


def _experiment_id(client, name: str, uri: str, run_dir: Path) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found and found.lifecycle_stage != "active":
        raise _deleted_experiment(found, uri, run_dir)
    if found:
        _describe_experiment(client, found)
        return found.experiment_id
    location = artifacts_beside(uri)
    try:
        return client.create_experiment(
            name, artifact_location=location, tags={**EXPERIMENT_KIND, "mlflow.note.content": EXPERIMENT_NOTE}
        )
    except MlflowException as exc:  # another process (a parallel job) created it in between
        found = client.get_experiment_by_name(name) if exc.error_code == "RESOURCE_ALREADY_EXISTS" else None
        if found is None or found.lifecycle_stage != "active":
            raise
        return found.experiment_id


def _describe_experiment(client, experiment) -> None:
    """Give an experiment made before these tags existed MLflow's experiment kind and the note on the names."""
    for key, value in {**EXPERIMENT_KIND, "mlflow.note.content": EXPERIMENT_NOTE}.items():
        if key not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, key, value)


def _existing_run(client, run_id: str, name: str, uri: str, run_dir: Path):
    """The run ``run_id`` if this store has it (None if not: a run id from another server), after checking
    that it can take more logging: its experiment active and still named ``name``, the run itself active."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    experiment = client.get_experiment(run.info.experiment_id)
    if experiment.lifecycle_stage != "active":
        raise _deleted_experiment(experiment, uri, run_dir)
    if name and experiment.name != name:
        eid = experiment.experiment_id
        raise StoreRefused(
            f"MLflow at {uri} cannot log {run_dir}: its run {run_id} is in experiment {eid}, which is now named "
            f"'{experiment.name}', not '{name}' (renamed?); the report looks experiments up by name. Rename it "
            f"back: {_cli(uri, f'experiments rename --experiment-id {eid} --new-name {name!r}')}. "
            f"Then run `emanet track sync {run_dir}`."
        )
    if run.info.lifecycle_stage != "active":
        raise StoreRefused(
            f"MLflow at {uri} cannot log {run_dir}: its run {run_id} is deleted. Restore it: "
            f"{_cli(uri, f'runs restore --run-id {run_id}')}; or remove it for good "
            f"({_gc(uri, f'--run-ids {run_id}')}) and the next sync logs the run folder as a new run. "
            f"Then run `emanet track sync {run_dir}`."
        )
    return run


def sync_run(run_dir: str | Path, uri: str | None = None) -> str:
    """Mirror a run folder into MLflow: create or reuse its run, log what the server lacks; return the run id.

    Idempotent: parameters are set once, metric points are logged only for (key, step) pairs the server
    does not have yet, artifacts are re-uploaded (same names). ``uri`` is the store as MLflow reads it (a
    relative SQLite path is relative to the working directory); by default the one ``run.json`` names
    (a local store's path kept relative to ``run_dir``), else :func:`default_uri`.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``run.json``.
        StoreRefused: the store answered with a state that waiting will not change (deleted or renamed
            experiment, deleted run, permission denied, read-only or foreign database, old schema, a
            refused value); the message gives the store's answer and the fix.
        StoreUnreachable: connection failure, timeout, server error, busy database.
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    if not info:
        raise FileNotFoundError(f"{run_dir / 'run.json'}: not a run folder (nothing to sync)")
    if not uri:  # run.json keeps a local store's path relative to the run folder
        stored = info.get("tracking_uri")
        uri = resolved_uri(stored, run_dir) if stored else default_uri()
    try:
        client = _client(uri)
        follow_moved_store(client, uri)
        run_id = info.get("mlflow_run_id")
        if run_id and _existing_run(client, run_id, info.get("mlflow_experiment"), uri, run_dir) is None:
            run_id = None  # a run id from another server (or removed for good): start afresh here
        if not run_id:
            experiment_id = _experiment_id(client, info["mlflow_experiment"], uri, run_dir)
            run = client.create_run(
                experiment_id,
                run_name=info["run_name"],
                tags=info.get("tags", {}),
                start_time=_ms((info.get("train") or {}).get("started")),
            )
            run_id = run.info.run_id
            info.update(mlflow_run_id=run_id, tracking_uri=portable_uri(uri, run_dir))
            _write_run_info(run_dir, info)
        experiment_id = _replay(client, run_id, run_dir, info)
        from emanet.tracking.views import write_views

        write_views(client, experiment_id, EXPERIMENT_NOTE, NOTE_MARK)
    except TrackingStoreError:
        raise
    except Exception as exc:
        failure = store_failure(exc, uri, run_dir)
        if failure is None:
            raise
        raise failure from exc
    return run_id


def _replay(client, run_id: str, run_dir: Path, info: dict[str, Any]) -> str:
    """Log what the run ``run_id`` lacks of the run folder; return the run's experiment id."""
    from mlflow.entities import Metric, Param, RunTag

    run = client.get_run(run_id)
    params = [
        Param(k, str(v)[:6000]) for k, v in tracked_params(info.get("params", {})).items() if k not in run.data.params
    ]
    tags = [RunTag(k, str(v)) for k, v in info.get("tags", {}).items()]
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=params[start : start + 100])
    if tags:
        client.log_batch(run_id, tags=tags)
    points = _metric_points(run_dir, info)
    have = {key: {m.step for m in client.get_metric_history(run_id, key)} for key in {k for k, _, _ in points}}
    now = int(time.time() * 1000)
    missing = [Metric(k, v, now, step) for k, step, v in points if step not in have[k]]
    for start in range(0, len(missing), 500):
        client.log_batch(run_id, metrics=missing[start : start + 500])
    for path in sorted(run_dir.iterdir()):
        if path.is_file() and path.suffix in ARTIFACT_SUFFIXES:
            client.log_artifact(run_id, str(path))
    if info.get("finished"):  # the run's time is its training's, not the wait for evaluation
        client.set_terminated(run_id, "FINISHED", end_time=_ms((info.get("train") or {}).get("finished")))
    return run.info.experiment_id


def metric_name(name: str) -> str:
    """``name`` with every character MLflow refuses in a metric name (``( ) , : ...``) made ``_``."""
    return _METRIC_NAME_BAD.sub("_", name)


def evaluation_prefix(metrics: dict, info: dict[str, Any]) -> str:
    """``<dataset>_<split>/<protocol>`` of one metrics*.json: what the numbers were measured on (VOC val
    for most runs, VOC test for the ``*_trainval`` ones in the same experiment). The dataset is the file's
    own, else the run's ``eval.dataset``, else its training dataset; ``voc_test`` + ``test`` is ``voc_test``."""
    params = info.get("params", {})
    dataset = metrics.get("dataset") or params.get("eval.dataset") or info.get("dataset") or "unknown"
    split = metrics.get("split") or params.get("eval.split") or "unknown"
    where = dataset if dataset.endswith(f"_{split}") else f"{dataset}_{split}"
    return metric_name(f"{where}/{metrics.get('protocol', 'ss')}")


def tracked_params(params: dict[str, Any]) -> dict[str, Any]:
    """The flattened settings MLflow gets as params and ``hp/`` metrics: ``params`` less the settings of a
    head the run does not have (``model.ema.*`` unless ``model.head`` is ``ema``); run.json keeps them all."""
    head = params.get("model.head")
    unused = tuple(prefix for name, prefix in HEAD_SETTINGS.items() if name != head)
    return {k: v for k, v in params.items() if not k.startswith(unused)} if unused else dict(params)


def _metric_points(run_dir: Path, info: dict[str, Any]) -> list[tuple[str, int, float]]:
    """(key, step, value) from train_log.csv (empty cells skipped), every metrics*.json (summary and
    per-class values at step 0, named by :func:`evaluation_prefix`) and the numeric settings (``hp/``,
    those :func:`tracked_params` keeps)."""
    points = []
    log_file = run_dir / "train_log.csv"
    if log_file.exists():
        with open(log_file, newline="") as handle:
            for row in csv.DictReader(handle):
                step = int(row["iteration"])
                points += [(f"train/{k}", step, float(v)) for k, v in row.items() if k != "iteration" and v]
    for path in sorted(run_dir.glob("metrics*.json")):
        metrics = json.loads(path.read_text())
        prefix = evaluation_prefix(metrics, info)
        for key in SUMMARY_METRICS:
            if metrics.get(key) is not None:
                points.append((f"{prefix}/{key}", 0, float(metrics[key])))
        for name, iou in (metrics.get("per_class") or {}).items():
            if iou is not None:
                points.append((metric_name(f"{prefix}/iou/{name}"), 0, float(iou)))
    for key, value in tracked_params(info.get("params", {})).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in OPERATIONAL:
            points.append((f"hp/{key}", 0, float(value)))
    return points


class Tracker:
    """Rank 0's tracker for one run folder; every MLflow failure is caught, so training never stops for it.

    An outage (:class:`StoreUnreachable`, or anything else unexpected) is warned about once and retried
    every ``RETRY_SECONDS``, replaying what was missed. A refusal (:class:`StoreRefused`: deleted or
    renamed experiment, deleted run, permission denied, ...) is warned about once with the store's
    message and the fix, and tracking stops for this process: ``emanet track sync`` replays the run
    folder once the store is fixed.
    """

    #: how long to wait before trying a lost server again (EMANET_TRACKING_RETRY_SECONDS overrides)
    RETRY_SECONDS = float(os.environ.get("EMANET_TRACKING_RETRY_SECONDS", "30"))

    def __init__(
        self,
        run_dir: Path,
        enabled: bool,
        uri: str | None,
        experiment: str,
        run_name: str,
        params: dict[str, Any],
        tags: dict[str, str],
    ):
        self.run_dir, self.enabled = run_dir, enabled
        self.uri = uri or default_uri()
        info = read_run_info(run_dir)
        if info.get("mlflow_experiment") not in (None, experiment):  # tracking.experiment changed: MLflow cannot
            info.pop("mlflow_run_id", None)  # move a run, so start one in the new one
        info.update(
            mlflow_experiment=experiment,
            run_name=run_name,
            params=params,
            tags={**info.get("tags", {}), **tags},
            tracking_uri=portable_uri(self.uri, run_dir) if enabled else None,
        )
        info.setdefault("finished", False)
        _write_run_info(run_dir, info)
        self.online, self._last_try, self._warned = False, 0.0, False
        self.run_id, self.client = None, None
        self.refused: StoreRefused | None = None  # set once the store refuses: no more attempts
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
        except StoreRefused as exc:
            self._refuse(exc)
        except Exception as exc:  # noqa: BLE001 - a failing tracking server must not stop training
            self._went_offline(exc)

    def _refuse(self, exc: StoreRefused) -> None:
        self.online, self.refused = False, exc
        log.warning(
            "%s\nTraining goes on, and tracking stops for this run (the store's answer is not an outage, "
            "so it is not retried); the run folder keeps everything.",
            exc,
        )

    def _went_offline(self, exc: Exception) -> None:
        self.online = False
        if not self._warned:
            if not isinstance(exc, StoreUnreachable):
                exc = (
                    f"MLflow at {self.uri} is unreachable ({exc.__class__.__name__}: {_answer(exc)}); the run "
                    f"folder keeps everything, and `emanet track sync {self.run_dir}` replays it"
                )
            log.warning("%s. Training goes on and tries again every %.0f s.", exc, self.RETRY_SECONDS)
            self._warned = True

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log points that are already in the run folder; retry a lost server every RETRY_SECONDS.

        A refusal sends the whole run folder once more (:meth:`_connect`), which either says why (a
        deleted run or experiment, ...) and stops, or succeeds (a run removed for good is recreated).
        """
        if not self.enabled or self.refused:
            return
        if self.online:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            try:
                self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])
                return
            except Exception as exc:  # noqa: BLE001
                failure = store_failure(exc, self.uri, self.run_dir)
                if isinstance(failure, StoreRefused):
                    self._connect()
                    return
                self._went_offline(failure or exc)
        if time.monotonic() - self._last_try >= self.RETRY_SECONDS:
            self._connect()

    def finish(self) -> None:
        """Mark the run finished and mirror everything (artifacts included)."""
        info = read_run_info(self.run_dir)
        info["finished"] = True
        _write_run_info(self.run_dir, info)
        if self.enabled and not self.refused:
            self._connect()


def metrics_from_mlflow(uri: str, experiment_names: list[str]) -> dict[str, dict]:
    """{experiment: {"run_id", "imported", protocol: mIoU in [0, 1], ...}} from ``mlflow.search_runs`` alone
    (the newest finished run of each experiment), to rebuild tables without the run folders.
    MLflow experiments that do not exist (a dataset nobody trained on yet) are skipped."""
    import mlflow

    _client(uri)
    runs = mlflow.search_runs(
        experiment_names=experiment_names,
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    found: dict[str, dict] = {}
    for _, run in runs.iterrows():
        name = run.get("tags.experiment")
        if not name or name in found:
            continue
        # metrics.<dataset>_<split>/<protocol>/miou -> protocol (ss, ms_flip, ss_T<n>)
        metrics = {
            col.split("/")[-2]: float(run[col])
            for col in runs.columns
            if col.startswith("metrics.") and col.endswith("/miou") and col.count("/") >= 2 and run[col] == run[col]
        }
        found[name] = {"run_id": run["run_id"], "imported": run.get("tags.imported") == "true", **metrics}
    return found
