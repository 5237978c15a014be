"""Where a local SQLite MLflow store lives, and following it when the project is moved or copied.

``run.json`` keeps a local SQLite store's URI relative to the run folder (``sqlite:///../../../../mlflow.db``:
:func:`portable_uri`, read back by :func:`resolved_uri`), so a moved or copied project still finds its store.
Experiments emanet creates keep their artifacts in the ``mlartifacts`` folder beside the database
(:func:`artifacts_beside`); MLflow itself makes every local artifact location absolute
(``resolve_uri_if_local``), so the first sync after a move points the whole store's emanet locations at
the new folder (:func:`follow_moved_store`). SQLite's URI filenames (``sqlite:///file:...?uri=true``) are
passed to SQLite as they are (:func:`guard_uri_filenames`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def _sqlite_path(uri: str) -> tuple[str | None, str]:
    """(path, "?query" or "") of a plain ``sqlite:///PATH`` URI; (None, "") for every other URI, SQLite's
    URI filenames (``sqlite:///file:...``) and in-memory databases included."""
    if not uri.startswith("sqlite:///"):
        return None, ""
    path, mark, query = uri[len("sqlite:///") :].partition("?")
    if not path or path == ":memory:" or path.startswith("file:"):
        return None, ""
    return path, mark + query


def portable_uri(uri: str, run_dir: Path) -> str:
    """``uri`` as ``run.json`` keeps it: a local SQLite file's path relative to ``run_dir`` (a relative
    path in ``uri`` is relative to the working directory, as MLflow reads it); anything else unchanged."""
    path, query = _sqlite_path(uri)
    if path is None:
        return uri
    return "sqlite:///" + os.path.relpath(Path(path).resolve(), Path(run_dir).resolve()) + query


def resolved_uri(stored: str, run_dir: Path) -> str:
    """The inverse of :func:`portable_uri`: a stored relative SQLite path made absolute against ``run_dir``."""
    path, query = _sqlite_path(stored)
    if path is None or Path(path).is_absolute():
        return stored
    return f"sqlite:///{(Path(run_dir) / path).resolve()}{query}"


def guard_uri_filenames() -> None:
    """MLflow (3.8+, mlflow/mlflow#19205) creates an SQLite database's parent folder from the text after
    ``sqlite:///``; for SQLite's URI filenames (``sqlite:///file:/abs/mlflow.db?mode=ro&uri=true``) that
    text is not a path, and MLflow created the folder ``file:/abs`` under the working directory. Such a
    URI names a file SQLite opens itself (with ``mode=ro``, one that must exist): skip the folder for it.
    Patches ``mlflow.store.db.utils._make_parent_dirs_if_sqlite`` once per process."""
    from mlflow.store.db import utils

    make = getattr(utils, "_make_parent_dirs_if_sqlite", None)
    if make is None or getattr(make, "emanet_guard", False):
        return

    def guarded(db_uri: str) -> None:
        if not db_uri.startswith("sqlite:///file:"):
            make(db_uri)

    guarded.emanet_guard = True
    utils._make_parent_dirs_if_sqlite = guarded


def artifacts_beside(uri: str) -> str | None:
    """``file://`` URI of the ``mlartifacts`` folder beside a local SQLite store (None for other stores):
    artifacts live with the database, not in whatever the working directory is."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?")[0]  # also the URI form, sqlite:///file:/path?mode=ro&uri=true
    path = path[len("file:") :] if path.startswith("file:") else path
    return (Path(path).parent / "mlartifacts").resolve().as_uri()


def follow_moved_store(client, uri: str) -> None:
    """After a local SQLite store was moved or copied with its project, point every experiment and run of
    it whose artifact location emanet chose at the ``mlartifacts`` folder now beside it, in one transaction.

    MLflow stores every local artifact location as an absolute path (``resolve_uri_if_local``), so a moved
    store still names the old folder: uploads would go to (and recreate) the old place, and the UI would
    show the old files. Emanet's locations are an experiment's ``file://<folder>/mlartifacts`` and a run's
    ``file://<folder>/mlartifacts/<run id>/artifacts`` (what MLflow derives from its experiment's); only
    those are rewritten (other experiments', MLflow's ``Default`` among them, are left alone), whatever
    experiment they belong to, through MLflow's own tables (``experiments.artifact_location``,
    ``runs.artifact_uri``). The first sync after a move relocates the whole store; later ones find nothing."""
    if _sqlite_path(uri)[0] is None:  # not a database file named by its path (a server, a URI filename, memory)
        return
    expected = artifacts_beside(uri)
    import inspect

    from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlRun
    from sqlalchemy import literal, update

    run_target = literal(expected + "/") + SqlRun.run_uuid + literal("/artifacts")
    stale_runs = (
        SqlRun.artifact_uri.like(literal("file://%/mlartifacts/") + SqlRun.run_uuid + literal("/artifacts")),
        SqlRun.artifact_uri != run_target,
    )
    stale_experiments = (
        SqlExperiment.artifact_location.like("file://%/mlartifacts"),
        SqlExperiment.artifact_location != expected,
    )
    store = client._tracking_client.store
    with store.ManagedSessionMaker() as session:  # reading: nothing to do unless the store moved
        experiments = [e for (e,) in session.query(SqlExperiment.name).filter(*stale_experiments)]
        runs = [r for (r,) in session.query(SqlRun.run_uuid).filter(*stale_runs)]
    if not experiments and not runs:
        return
    writable = {"read_only": False} if "read_only" in inspect.signature(store.ManagedSessionMaker).parameters else {}
    with store.ManagedSessionMaker(**writable) as session:  # one transaction: all of them or none
        session.execute(
            update(SqlExperiment)
            .where(*stale_experiments)
            .values(artifact_location=expected)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(SqlRun)
            .where(*stale_runs)
            .values(artifact_uri=run_target)
            .execution_options(synchronize_session=False)
        )
    from mlflow.tracking._tracking_service import utils as service_utils

    cache = getattr(service_utils, "_artifact_repos_cache", {})  # this process's repositories of those runs
    for run_id in runs:
        cache.pop(run_id, None)
    log.info(
        "MLflow store %s was moved: its artifacts are now read from and written to %s (%d experiments: %s; %d runs)",
        uri,
        expected,
        len(experiments),
        ", ".join(experiments) or "none",
        len(runs),
    )
