"""MLflow as a place to compare runs: the runs view, sortable sweeps, metric names that say what was
measured, per-class IoU, run time without the queue, and run folders that keep working when moved."""

from __future__ import annotations

import json
import os
import re
import shutil
import types
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
import pytest

from emanet.tracking import Tracker, metrics_from_mlflow, read_run_info, sync_run
from emanet.tracking.views import VIEW_TAG, View, plan_views, swept, write_views
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


def _run_folder(
    root: Path,
    name: str,
    bases: int,
    uri: str,
    eval_dataset: str | None = None,
    split: str = "val",
    tables: str | None = None,
    experiment: str = EXPERIMENT,
    head: str = "ema",
) -> Path:
    """A finished run folder as train + evaluate leave it (without the training)."""
    run_dir = root / "results" / "runs" / name
    run_dir.mkdir(parents=True)
    (run_dir / "train_log.csv").write_text(
        "iteration,loss,lr,images_per_s,elapsed_s,data_s,step_s,max_memory_mib\n"
        "5,1.5,0.01,30.0,1.0,0.01,0.1,\n10,1.0,0.009,31.0,2.0,0.01,0.1,\n"
    )
    params = {
        "model.head": head,
        "model.ema.num_bases": bases,
        "model.ema.momentum": 0.9,
        "train.iterations": 10,
        "train.log_interval": 5,
        "eval.dataset": eval_dataset,
        "eval.split": split,
        "train.amp": "none",
    }
    (run_dir / "run.json").write_text(
        json.dumps(
            {
                "dataset": "voc",
                "train": {"started": "2026-01-02T03:04:05+00:00", "finished": "2026-01-02T04:04:05+00:00"},
            }
        )
    )
    tags = {"experiment": name, **({"tables": tables} if tables else {})}
    Tracker(run_dir, True, uri, experiment, name, params, tags)
    metrics = {
        "protocol": "ss",
        "split": split,
        "miou": 0.5 + bases / 1000,
        "pixel_acc": 0.9,
        "mean_acc": 0.6,
        "fwiou": 0.8,
        "per_class": {"background": 0.9, "aeroplane": 0.25, "tv/monitor": None},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    info = read_run_info(run_dir)
    info["finished"] = True
    (run_dir / "run.json").write_text(json.dumps(info))
    return run_dir


def _get(url: str, path: str, **query) -> dict:
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}", timeout=30) as r:
        return json.loads(r.read())


def test_runs_view_sortable_sweep_named_metrics_and_run_time(tmp_path, server):
    folders = {
        k: _run_folder(tmp_path / f"k{k}", f"k{k}", k, server.url, tables="k_sweep") for k in (128, 16, 256, 32, 64)
    }
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


def test_the_k_sweep_view_sorts_by_k_and_shows_miou(tmp_path, server):
    """The saved view the UI opens from ...?viewStateShareKey=emanet_k_sweep, read back from the server as
    the UI reads it, selects the sweep's runs in K's order (the UI's query) with the mIoU columns."""
    name = "emanet/test/views"
    for k in (128, 16, 256, 32, 64):
        _run_folder(tmp_path / f"k{k}", f"k{k}", k, server.url, tables="k_sweep", experiment=name)
    _run_folder(tmp_path / "fcn", "fcn", 64, server.url, tables="table1", experiment=name, head="fcn")  # no EMA
    for k in (128, 16, 256, 32, 64):
        sync_run(tmp_path / f"k{k}" / "results/runs" / f"k{k}")
    sync_run(tmp_path / "fcn/results/runs/fcn")
    experiment = _get(server.url, "experiments/get-by-name", experiment_name=name)["experiment"]
    tags = {t["key"]: t["value"] for t in experiment["tags"]}
    envelope = json.loads(tags[VIEW_TAG + "emanet_k_sweep"])
    assert envelope["name"] == "emanet: k_sweep" and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])  # what the UI restores: search facets and table columns
    assert state["orderByKey"] == "metrics.`hp/model.ema.num_bases`" and state["orderByAsc"] is True
    assert state["searchFilter"] == "tags.tables LIKE '%k_sweep%'"
    assert state["selectedColumns"] == ["metrics.`hp/model.ema.num_bases`", "metrics.`voc_val/ss/miou`"]
    assert state["columnOrder"] == ["duration", *state["selectedColumns"]]
    runs = mlflow.MlflowClient(server.url).search_runs(  # the query the UI sends for the view
        [experiment["experiment_id"]],
        filter_string=state["searchFilter"],
        order_by=[f"{state['orderByKey']} {'ASC' if state['orderByAsc'] else 'DESC'}"],
    )
    assert [r.info.run_name for r in runs] == ["k16", "k32", "k64", "k128", "k256"]
    assert all(r.data.metrics["voc_val/ss/miou"] > 0 for r in runs)  # the column has a value in every row
    every = mlflow.MlflowClient(server.url).search_runs(
        [experiment["experiment_id"]], order_by=[f"{state['orderByKey']} ASC"]
    )  # the whole runs table sorted by K: a run without EMA is not a K=64 run
    assert [r.info.run_name for r in every] == ["k16", "k32", "k64", "k128", "k256", "fcn"]
    fcn = every[-1].data  # no EMA head, no EMA settings
    assert not [k for k in [*fcn.metrics, *fcn.params] if "model.ema." in k] and fcn.params["model.head"] == "fcn"
    assert runs[0].data.params["model.ema.momentum"] == "0.9" and runs[0].data.metrics["hp/model.ema.momentum"] == 0.9
    assert tags[VIEW_TAG + "emanet_table1"] and tags[VIEW_TAG + "emanet"]
    url = View("emanet_k_sweep", "", {}).url(experiment["experiment_id"])
    assert f"]({url})" in tags["mlflow.note.content"]  # a link in the experiment's note
    assert (
        url == f"#/experiments/{experiment['experiment_id']}/runs?viewStateShareKey=emanet_k_sweep"
        "&workflowType=machine_learning"
    )


def _fake_run(name: str, tables: str, metrics: dict, params: dict) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        info=types.SimpleNamespace(run_id=f"id_{name}", run_name=name),
        data=types.SimpleNamespace(tags={"tables": tables}, metrics=metrics, params={"experiment": name, **params}),
    )


def test_views_sort_by_the_one_number_swept_and_name_their_runs_exactly():
    miou = {"voc_val/ss/miou": 0.5}
    runs = [
        _fake_run(
            "r50_t1",
            "fig4",
            {**miou, "hp/model.ema.stages": 1, "voc_val/ss_T10/miou": 0.4, "voc_val/ss_T2/miou": 0.4},
            {"model.head": "ema"},
        ),
        _fake_run(
            "r50",
            "fig3,fig4",
            {**miou, "hp/model.ema.stages": 3},  # how and where it ran: no setting
            {"model.head": "ema", "data.workers": "4", "train.device": "cuda", "tracking.uri": "x"},
        ),
        _fake_run("fcn", "table1", {**miou, "voc_val/ms_flip/miou": 0.6}, {"model.head": "fcn"}),
        _fake_run("ema", "table1,table2_stages", {**miou, "hp/model.ema.stages": 3}, {"model.head": "ema"}),
        _fake_run("coco", "table2", {"voc_test/ss/miou": 0.3, "hp/model.ema.stages": 3}, {"model.head": "ema"}),
    ]
    views = {v.key: v.state for v in plan_views(runs)}
    assert set(views) == {
        "emanet",
        "emanet_fig3",
        "emanet_fig4",
        "emanet_table1",
        "emanet_table2",
        "emanet_table2_stages",
    }
    assert views["emanet_fig4"]["orderByKey"] == "metrics.`hp/model.ema.stages`"
    assert views["emanet_fig4"]["selectedColumns"] == [  # ss_T numerically: T2 before T10
        "metrics.`hp/model.ema.stages`",
        "metrics.`voc_val/ss/miou`",
        "metrics.`voc_val/ss_T2/miou`",
        "metrics.`voc_val/ss_T10/miou`",
    ]
    # a string setting differs too (model.head): sorted by name, the setting a column of its own
    assert views["emanet_table1"]["orderByKey"] == "tags.`mlflow.runName`"
    assert views["emanet_table1"]["selectedColumns"] == [
        "metrics.`voc_val/ss/miou`",
        "metrics.`voc_val/ms_flip/miou`",
        "params.`model.head`",
    ]
    # 'table2' is part of 'table2_stages': LIKE would take the ema run too, so the run is named by id
    assert views["emanet_table2"]["searchFilter"] == "attributes.run_id IN ('id_coco')"
    assert views["emanet_table2_stages"]["searchFilter"] == "tags.tables LIKE '%table2_stages%'"
    assert views["emanet"]["selectedColumns"][:2] == ["metrics.`voc_val/ss/miou`", "metrics.`voc_val/ms_flip/miou`"]
    assert views["emanet"]["selectedColumns"][-1] == "metrics.`voc_test/ss/miou`"


def test_settings_only_some_runs_have_differ_only_when_their_values_do():
    """Table 1's heads: the EMA runs' K (the same) is no setting swept because the other heads lack it;
    a table whose EMA runs differ in K still sorts by it."""
    ema = {"hp/model.ema.num_bases": 64, "hp/model.ema.momentum": 0.9}
    table1 = [
        _fake_run("fcn", "table1", {"hp/model.head_channels": 512}, {"model.head": "fcn"}),
        _fake_run("aspp", "table1", {"hp/model.head_channels": 512}, {"model.head": "aspp"}),
        _fake_run(
            "ema512", "table1", {"hp/model.head_channels": 512, **ema}, {"model.head": "ema", "model.ema.norm": "l2"}
        ),
        _fake_run(
            "ema256", "table1", {"hp/model.head_channels": 256, **ema}, {"model.head": "ema", "model.ema.norm": "l2"}
        ),
    ]
    assert swept(table1) == (["hp/model.head_channels"], ["model.head"])
    sweep = [
        _fake_run(f"k{k}", "k_sweep", {**ema, "hp/model.ema.num_bases": k}, {"model.head": "ema"}) for k in (16, 64)
    ]
    assert swept(sweep) == (["hp/model.ema.num_bases"], [])
    assert swept(sweep + table1[:1]) == (["hp/model.ema.num_bases"], ["model.head"])


def test_views_are_rewritten_only_when_changed_and_leave_the_users_alone(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    eid = client.create_experiment(
        "views",
        tags={
            "mlflow.note.content": "emanet runs. First.",
            VIEW_TAG + "3f2a": "a view someone saved in the UI",
            VIEW_TAG + "emanet_gone": "{}",
        },
    )
    run = client.create_run(eid, run_name="k16", tags={"tables": "k_sweep"})
    client.log_metric(run.info.run_id, "voc_val/ss/miou", 0.5)
    write_views(client, eid, "emanet runs. Second.", "emanet runs.")
    tags = client.get_experiment(eid).tags
    assert VIEW_TAG + "emanet_gone" not in tags and tags[VIEW_TAG + "3f2a"] == "a view someone saved in the UI"
    assert re.fullmatch(r"emanet runs\. Second\.\n\nSaved views .*", tags["mlflow.note.content"], re.S)
    stamp = json.loads(tags[VIEW_TAG + "emanet_k_sweep"])["updatedAt"]
    client.set_experiment_tag(eid, "mlflow.note.content", "my own note")
    write_views(client, eid, "emanet runs. Second.", "emanet runs.")
    tags = client.get_experiment(eid).tags
    assert json.loads(tags[VIEW_TAG + "emanet_k_sweep"])["updatedAt"] == stamp  # nothing changed: not rewritten
    assert tags["mlflow.note.content"] == "my own note"


def test_the_installed_mlflow_ui_reads_saved_views_as_written():
    """The names this module writes, as MLflow's UI bundle spells them (an MLflow upgrade that renames
    them fails here, not silently in the browser)."""
    build = Path(mlflow.__file__).parent / "server/js/build/static/js"
    bundle = "".join(p.read_text(errors="replace") for p in build.glob("*.js"))
    for name in (
        '"mlflow.sharedViewState."',
        '"viewStateShareKey"',
        "Invalid saved-view envelope",
        '"selectedColumns","columnOrder","columnWidths"',
        '"searchFilter","orderByKey","orderByAsc"',
        'RUN_NAME:"tags.`mlflow.runName`"',
        'field:"duration"',
        '.MACHINE_LEARNING="machine_learning"',
        'e+".`"+t+"`"',
    ):  # the canonical column key: metrics.`name`
        assert name in bundle, name


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
        [mlflow.MlflowClient(f"sqlite:///{moved / 'mlflow.db'}").get_experiment_by_name(EXPERIMENT).experiment_id]
    )
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


def test_a_copied_project_has_its_whole_store_relocated_by_one_sync(tmp_path, monkeypatch):
    """Every experiment and run whose artifact location emanet chose follows the store, not only the synced
    run's experiment (a copied demo kept 4 experiments and their runs on the old folder); others stay."""
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    voc = _run_folder(project, "k64", 64, "sqlite:///mlflow.db")
    _run_folder(project, "k16", 16, "sqlite:///mlflow.db")
    _run_folder(project, "context", 64, "sqlite:///mlflow.db", experiment="emanet/test/context")
    _run_folder(project, "coco", 64, "sqlite:///mlflow.db", experiment="emanet/test/coco_voc")
    for name in ("k64", "k16", "context", "coco"):
        sync_run(project / "results/runs" / name)
    mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}").create_experiment(
        "someone's", artifact_location=(tmp_path / "theirs").as_uri()
    )
    copy = tmp_path / "copy"
    shutil.copytree(project, copy)
    monkeypatch.chdir(tmp_path)
    sync_run(copy / "results/runs" / voc.name)  # one run of one experiment

    import sqlite3

    with sqlite3.connect(copy / "mlflow.db") as db:
        experiments = dict(db.execute("SELECT name, artifact_location FROM experiments"))
        runs = dict(db.execute("SELECT run_uuid, artifact_uri FROM runs"))
    new = (copy / "mlartifacts").as_uri()
    assert {n: loc for n, loc in experiments.items() if n.startswith("emanet/")} == {
        EXPERIMENT: new,
        "emanet/test/context": new,
        "emanet/test/coco_voc": new,
    }
    assert experiments["someone's"] == (tmp_path / "theirs").as_uri()  # not emanet's location: left alone
    assert (
        experiments["Default"]
        == mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_experiment("0").artifact_location
    )  # MLflow's own
    assert len(runs) == 4 and runs == {run_id: f"{new}/{run_id}/artifacts" for run_id in runs}
    with sqlite3.connect(project / "mlflow.db") as db:  # the original store is not touched
        assert {uri for (uri,) in db.execute("SELECT artifact_uri FROM runs")} == {
            f"{(project / 'mlartifacts').as_uri()}/{run_id}/artifacts" for run_id in runs
        }
