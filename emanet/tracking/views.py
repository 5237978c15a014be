"""Saved views of MLflow's runs table: each paper table's runs sorted by what the table sweeps, with mIoU columns.

MLflow 3's runs table shows no metric column by default and sorts by start time; the server cannot
change that. What it offers is the *saved view*: an experiment tag ``mlflow.sharedViewState.<key>``
holding ``{"name", "createdAt", "updatedAt", "state"}`` (times in ms since the epoch; ``state`` the view's
JSON text: the search facets ``searchFilter``, ``orderByKey``, ``orderByAsc`` and the table's
``selectedColumns``, ``columnOrder``, ``columnWidths``, columns named by MLflow's canonical keys
``metrics.`<name>``` and ``params.`<name>```). The UI lists these in the runs tab's view menu and opens one
from ``<server>/#/experiments/<id>/runs?viewStateShareKey=<key>``; ``&workflowType=machine_learning``
gives the side bar for training runs, which a browser that never chose one does not show. Read from the
MLflow 3.17 UI's bundle (mlflow/server/js/build): the tag prefix, the envelope check ("Invalid saved-view
envelope"), the fields the UI takes from a state; the UI writes the state deflated and reads plain JSON too.

Every sync of a run rewrites, for the run's MLflow experiment:

* ``emanet``: every run, by name, with every ``<dataset>_<split>/<protocol>/miou`` metric;
* ``emanet_<table>`` for each paper table its runs' ``tables`` tag names: the table's runs, with their mIoU
  metrics and the settings that differ between them (numeric ones as their ``hp/`` metric, the others
  as params); sorted by that setting when it is a number and the only one that differs (the K sweep
  by ``hp/model.ema.num_bases``: 16, 32, 64, 128, 256), by run name otherwise.

A view is written only when it changed; a view of a table that no run names any more is removed. The
experiment's note (when it is still emanet's) lists the views as links. A view saved under another
name in the UI is the user's and is never touched.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: the experiment-tag prefix MLflow's UI reads saved views from
VIEW_TAG = "mlflow.sharedViewState."
#: the longest experiment tag value MLflow stores (mlflow.utils.validation.MAX_EXPERIMENT_TAG_VAL_LENGTH)
MAX_TAG_VALUE = 20000
#: key of the view of every run; a table's view is ``emanet_<table>``
VIEW_KEY = "emanet"
RUN_NAME_COLUMN = "tags.`mlflow.runName`"  # the UI's sort key of its "Run Name" column
#: the UI's id of its Duration column: named first in a view's column order, so it stays beside the run
#: (the UI applies widths only to the columns its order names, and moves the others behind them)
DURATION_COLUMN = "duration"
HP_WIDTH, CHAR_WIDTH, PADDING, MAX_WIDTH = 120, 7, 30, 220  # column widths in CSS pixels
#: the UI's side bar for training runs (Runs, Models, Traces); without it a browser that never chose one
#: gets the GenAI side bar, whatever the experiment's kind
WORKFLOW = "machine_learning"
#: params that may differ between runs without being a setting compared: the run's own name, where it ran
#: and where its files are (besides tracking.OPERATIONAL, how it ran)
NOT_SETTINGS = ("experiment", "data.root", "train.device")
NOT_SETTING_SECTIONS = ("tracking.", "sources.")
_MIOU = re.compile(r"^(?P<where>[^/]+)/(?P<protocol>[^/]+)/miou$")


@dataclass(frozen=True)
class View:
    """One saved view: ``key`` (the URL's ``viewStateShareKey``), ``name`` (the UI's view menu),
    ``state`` (the JSON object the UI restores)."""

    key: str
    name: str
    state: dict

    def url(self, experiment_id: str, server: str = "") -> str:
        """``<server>/#/experiments/<id>/runs?viewStateShareKey=<key>&workflowType=machine_learning``;
        without ``server`` the part from ``#`` on, which a link in the experiment's note resolves against
        the page it is on."""
        page = f"#/experiments/{experiment_id}/runs?viewStateShareKey={self.key}&workflowType={WORKFLOW}"
        return f"{server.rstrip('/')}/{page}" if server else page


def column(kind: str, name: str) -> str:
    """MLflow UI's canonical column (and sort) key: ``metrics.`voc_val/ss/miou```, ``params.`model.head```."""
    return f"{kind}.`{name}`"


def _protocol_order(metric: str) -> tuple:
    """Sort key of an mIoU metric: val splits first (what most runs report), then by dataset and split;
    within one, ss, ms_flip, ss_T1, ss_T2, ... (T as a number), then any other protocol by name."""
    found = _MIOU.match(metric)
    where, protocol = found["where"], found["protocol"]
    steps = re.fullmatch(r"ss_T(\d+)", protocol)
    rank = (0, 0) if protocol == "ss" else (1, 0) if protocol == "ms_flip" else (2, int(steps[1])) if steps else (3, 0)
    return (not where.endswith("_val"), where, rank, protocol)


def miou_metrics(runs) -> list[str]:
    """The ``<dataset>_<split>/<protocol>/miou`` metrics any of ``runs`` has, in reading order."""
    return sorted({k for run in runs for k in run.data.metrics if _MIOU.match(k)}, key=_protocol_order)


def _like(pattern: str) -> re.Pattern:
    """SQL LIKE (``%`` any text, ``_`` any one character) as a regular expression matched anywhere."""
    return re.compile("".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern), re.S)


def _tables(run) -> set[str]:
    return {t for t in (run.data.tags.get("tables") or "").split(",") if t}


def table_filter(table: str, members: list, runs: list) -> str:
    """MLflow search filter selecting ``members`` (the runs of ``table``) among ``runs``: the readable
    ``tags.tables LIKE '%<table>%'`` when it selects exactly them now (a name that is part of another
    table's, like table2 in table2_stages, does not), else their run ids."""
    like = f"tags.tables LIKE '%{table}%'"
    pattern = _like(f"%{table}%")
    if all(bool(pattern.fullmatch(run.data.tags.get("tables") or "")) == (table in _tables(run)) for run in runs):
        return like
    ids = ", ".join(f"'{run.info.run_id}'" for run in sorted(members, key=lambda r: r.info.run_name or ""))
    return f"attributes.run_id IN ({ids})"


def swept(members: list) -> tuple[list[str], list[str]]:
    """(numeric settings, other settings) whose values differ between the ``members`` that have them:
    ``hp/<key>`` metric names and param names (a param whose number is an ``hp/`` metric is not repeated).
    A setting only some runs have (``model.ema.*``: runs with the EMA head) differs only if their values
    do; that the others lack it shows in what does differ (``model.head``)."""
    from emanet.tracking import OPERATIONAL

    def differs(values: list[dict], key: str) -> bool:
        return len({found[key] for found in values if key in found}) > 1

    hp = sorted({k for run in members for k in run.data.metrics if k.startswith("hp/")})
    numeric = [k for k in hp if differs([run.data.metrics for run in members], k)]
    ignored = {k[len("hp/") :] for k in hp} | set(NOT_SETTINGS) | set(OPERATIONAL)
    params = sorted(
        k for k in {k for run in members for k in run.data.params} - ignored if not k.startswith(NOT_SETTING_SECTIONS)
    )
    other = [k for k in params if differs([run.data.params for run in members], k)]
    return numeric, other


def plan_views(runs: list) -> list[View]:
    """The views of one experiment's (active) ``runs``: ``emanet`` and one per table its runs name."""
    views = [View(VIEW_KEY, "emanet: all runs", _state("", RUN_NAME_COLUMN, miou_metrics(runs), []))]
    for table in sorted(set().union(*(_tables(run) for run in runs)) if runs else ()):
        members = [run for run in runs if table in _tables(run)]
        numeric, other = swept(members)
        order = column("metrics", numeric[0]) if len(numeric) == 1 and not other else RUN_NAME_COLUMN
        views.append(
            View(
                f"{VIEW_KEY}_{table}",
                f"emanet: {table}",
                _state(table_filter(table, members, runs), order, numeric + miou_metrics(members), other),
            )
        )
    return views


def _state(search: str, order: str, metrics: list[str], params: list[str]) -> dict:
    """A view's state: the runs ``search`` selects sorted ascending by ``order``, the columns ``metrics``
    then ``params`` in that order after the run's duration, each wide enough for its name (a setting's
    ``hp/`` column narrower: its numbers are short)."""
    columns = [column("metrics", k) for k in metrics] + [column("params", k) for k in params]
    widths = {
        key: HP_WIDTH if name.startswith("hp/") else min(MAX_WIDTH, CHAR_WIDTH * len(name) + PADDING)
        for key, name in zip(columns, metrics + params)
    }
    return {
        "searchFilter": search,
        "orderByKey": order,
        "orderByAsc": True,
        "selectedColumns": columns,
        "columnOrder": [DURATION_COLUMN] + columns,
        "columnWidths": widths,
    }


def envelope(view: View, created_ms: int, updated_ms: int) -> str:
    """The tag value MLflow's UI reads a saved view from (its state as plain JSON text)."""
    return json.dumps(
        {
            "name": view.name,
            "createdAt": created_ms,
            "updatedAt": updated_ms,
            "state": json.dumps(view.state, sort_keys=True),
        }
    )


def _stored(value: str) -> tuple[str | None, dict | None, int | None]:
    """(name, state, createdAt) of a stored envelope; Nones for one this module cannot read."""
    try:
        found = json.loads(value)
        return found["name"], json.loads(found["state"]), int(found["createdAt"])
    except (ValueError, KeyError, TypeError):
        return None, None, None


def _ours(key: str) -> bool:
    view = key[len(VIEW_TAG) :]
    return key.startswith(VIEW_TAG) and (view == VIEW_KEY or view.startswith(VIEW_KEY + "_"))


def _search_all(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def views_note(views: list[View], experiment_id: str) -> str:
    """Markdown for the experiment's note: each view as a link (relative to the UI's page) and its order."""
    lines = ["Saved views (the runs tab's view menu, or these links; rewritten by every sync of a run):"]
    for view in views:
        order = view.state["orderByKey"]
        by = "run name" if order == RUN_NAME_COLUMN else f"`{order.split('`')[1]}`"
        lines.append(f"- [{view.name}]({view.url(experiment_id)}): sorted by {by}")
    return "\n".join(lines)


def write_views(client, experiment_id: str, note: str | None = None, note_mark: str = "") -> list[View]:
    """Bring ``experiment_id``'s emanet views up to date from its active runs; return them.

    Only views whose name or state changed are written (``createdAt`` of an existing view kept); emanet's
    views no longer planned are removed. With ``note`` (the experiment's own text), the note
    ``mlflow.note.content`` becomes ``note`` followed by the views' links, when there is none or the
    present one starts with ``note_mark`` (emanet wrote it; a note someone wrote in the UI is kept).
    """
    experiment = client.get_experiment(experiment_id)
    views = plan_views(_search_all(client, experiment_id))
    now = int(datetime.datetime.now(datetime.UTC).timestamp() * 1000)
    changed = []
    for view in views:
        name, state, created = _stored(experiment.tags.get(VIEW_TAG + view.key, ""))
        value = envelope(view, created or now, now)
        if (name, state) != (view.name, view.state) and len(value) > MAX_TAG_VALUE:
            log.warning(
                "MLflow view %s of experiment %s not written: %d characters, more than an experiment tag holds (%d)",
                view.key,
                experiment.name,
                len(value),
                MAX_TAG_VALUE,
            )
        elif (name, state) != (view.name, view.state):
            client.set_experiment_tag(experiment_id, VIEW_TAG + view.key, value)
            changed.append(view)
    planned = {VIEW_TAG + view.key for view in views}
    for key in [k for k in experiment.tags if _ours(k) and k not in planned]:
        client.delete_experiment_tag(experiment_id, key)
    if note is not None:
        text = f"{note}\n\n{views_note(views, experiment_id)}"
        current = experiment.tags.get("mlflow.note.content")
        if current != text and (current is None or current.startswith(note_mark)):
            client.set_experiment_tag(experiment_id, "mlflow.note.content", text)
    if changed:
        log.info(
            "MLflow experiment %s: views %s updated (in `mlflow ui`: %s)",
            experiment.name,
            ", ".join(view.key for view in changed),
            View("<key>", "", {}).url(experiment_id, "<server>"),
        )
    return views
