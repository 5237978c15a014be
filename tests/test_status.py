"""``emanet status`` on real run folders: a cut-down tiny plan (ema512, fcn, and ema512_ft fine-tuned from
ema512) trained and evaluated once, then one change at a time on a copy, each compared with the exact set of
stale (run, stage) pairs and the reasons' words; and the report's stale marks."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from emanet.config import load_params
from emanet.report import build_report
from emanet.runs import status as status_module
from emanet.runs.status import stale_pairs, status
from tests.conftest import ROOT
from tests.helpers.runs import emanet

RUNS = ("ema512", "fcn", "ema512_ft")
ALL_EVALUATIONS = {(run, "evaluate") for run in RUNS}
REPORT = {("report", "report")}


def _params(data_root: Path) -> dict:
    params = load_params(ROOT / "params.yaml")
    params["experiments"] = {k: params["experiments"][k] for k in ("ema512", "fcn")}
    params["finetunes"] = {
        "ema512_ft": {"data": {"dataset": "voc"}, "eval": {"dataset": "voc"}, "train": {"init_from": "ema512"}}
    }
    params["datasets"] = ["voc"]
    params["figures"] = {}
    params["tables"] = {
        "t": {
            "title": "T",
            "columns": [
                {"key": "ss", "label": "SS", "source": "metric:ss"},
                {"key": "ms", "label": "MS", "source": "metric:ms"},
            ],
            "rows": [{"label": name, "experiment": name} for name in RUNS],
        }
    }
    tiny = params["profiles"]["tiny"]
    tiny["data"] = {**tiny["data"], "root": str(data_root)}
    tiny["train"] = {**tiny["train"], "iterations": 4, "batch_size": 4, "checkpoint_interval": 2}
    tiny["eval"] = {**tiny["eval"], "server_labels": None}
    tiny["tracking"] = {"enabled": False}
    for key in list(tiny.get("experiments") or {}):
        if key not in RUNS:
            del tiny["experiments"][key]
    return params


def _write(params: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def finished(tmp_path_factory, prepared_root):
    """(params, results root) of the cut-down plan, trained, evaluated for the tables and reported."""
    base = tmp_path_factory.mktemp("status")
    params = _params(prepared_root)
    path = _write(params, base / "params.yaml")
    out = base / "results"
    for run in RUNS:
        common = ["--experiment", run, "--params", str(path), "--profile", "tiny", "--out", str(out)]
        _ok(emanet(["train", *common]))
        _ok(emanet(["evaluate", *common, "--for-tables"]))
    from emanet.bench.complexity import complexity
    from emanet.io import atomic_write_json

    atomic_write_json(out / "bench/complexity.json", complexity())  # as `emanet bench complexity --output`
    build_report(params, "tiny", out)
    return params, out


@pytest.fixture
def copy_of(finished, tmp_path):
    """A private copy of the finished results (tests change files in it) and a deep copy of its params."""
    params, out = finished
    mine = tmp_path / "results"
    shutil.copytree(out, mine)
    return copy.deepcopy(params), mine


def _reasons(found: dict, run: str, stage: str) -> str:
    entry = found["report"] if run == "report" else found["runs"][run]
    return " | ".join(s["reason"] for s in entry["stale"] if s["stage"] == stage)


def test_a_finished_plan_is_current(finished):
    params, out = finished
    found = status(params, "tiny", out)
    assert stale_pairs(found) == set(), found
    assert {name: run["state"] for name, run in found["runs"].items()} == dict.fromkeys(RUNS, "finished")
    assert found["report"]["state"] == "finished" and found["profile"] == "tiny"
    info = json.loads((out / "runs/ema512_ft/run.json").read_text())
    assert info["identity"]["init_sha256"] == info_sha(out / "runs/ema512")
    assert set(info["evaluations"]) == {"ss", "ms"} and info["code"]["train"]


def info_sha(run_dir: Path) -> str:
    return json.loads((run_dir / "run.json").read_text())["model"]["sha256"]


@pytest.mark.parametrize(
    ("edit", "expected", "words"),
    [
        # evaluation settings: only the evaluations that use them, and the report
        (lambda p: p["profiles"]["tiny"]["eval"].update(scales=[0.5, 1.0]), ALL_EVALUATIONS, "scales"),
        (
            lambda p: p["profiles"]["tiny"]["model"].update(ema={"eval_stages": 2}),
            {("ema512", "evaluate"), ("ema512_ft", "evaluate")},
            "eval_stages",
        ),
        # cadence and loader processes: nothing
        (lambda p: p["profiles"]["tiny"]["train"].update(log_interval=3, checkpoint_interval=1), set(), ""),
        (lambda p: p["profiles"]["tiny"]["data"].update(workers=2), set(), ""),
        # validation during training (its split and interval): logged, never changes the weights
        (lambda p: p["profiles"]["tiny"]["data"].update(val_split="train"), set(), ""),
        (lambda p: p["profiles"]["tiny"]["train"].update(eval_interval=2), set(), ""),
        # the other profile: nothing
        (lambda p: p["profiles"]["paper"].setdefault("train", {}).update(iterations=12345), set(), ""),
        # one experiment's model: it, its finetune (parent will be retrained), the report
        (
            lambda p: p["experiments"]["ema512"].update(model={"ema": {"num_bases": 16}}),
            {("ema512", "train"), ("ema512", "evaluate"), ("ema512_ft", "train"), ("ema512_ft", "evaluate")},
            "model.ema.num_bases 64 -> 16",
        ),
        # a table needs a protocol never evaluated
        (
            lambda p: p["tables"]["t"]["columns"].append({"key": "t1", "label": "T1", "source": "metric:ss_T1"}),
            ALL_EVALUATIONS,
            "ss_T1: never evaluated",
        ),
        # a table's title: the report alone
        (lambda p: p["tables"]["t"].update(title="Another"), set(), "tables"),
        # a new experiment: its training and evaluation
        (
            lambda p: p["experiments"].update(k8={"data": {"dataset": "voc"}, "model": {"ema": {"num_bases": 8}}}),
            {("k8", "train"), ("k8", "evaluate")},
            "not made",
        ),
    ],
)
def test_each_settings_change_makes_exactly_its_stages_stale(copy_of, edit, expected, words):
    params, out = copy_of
    edit(params)
    found = status(params, "tiny", out)
    pairs = stale_pairs(found)
    assert pairs - REPORT == expected, found
    assert (("report", "report") in pairs) == bool(expected or words == "tables"), found
    assert words in json.dumps(found), found


def test_a_retrained_parent_makes_its_finetune_and_evaluation_stale(copy_of):
    params, out = copy_of
    model = out / "runs/ema512/model.pt"
    state = torch.load(model, weights_only=True)
    state["head.classifier.bias"] = state["head.classifier.bias"] + 1.0
    torch.save(state, model)
    found = status(params, "tiny", out)
    assert stale_pairs(found) == {("ema512", "evaluate"), ("ema512_ft", "train"), ("ema512_ft", "evaluate")} | REPORT
    assert "ss: model.pt changed since it was evaluated" in _reasons(found, "ema512", "evaluate")
    assert "initial weights changed: parent ema512's model.pt" in _reasons(found, "ema512_ft", "train")


def test_code_and_data_changes_are_named(copy_of, monkeypatch, tmp_path):
    params, out = copy_of
    real = status_module.code_digest
    monkeypatch.setattr(status_module, "code_digest", lambda stage: "0" * 12 if stage == "evaluate" else real(stage))
    found = status(params, "tiny", out)
    assert stale_pairs(found) == ALL_EVALUATIONS | REPORT
    assert "ss: evaluation code changed" in _reasons(found, "fcn", "evaluate")
    monkeypatch.setattr(status_module, "code_digest", lambda stage: "0" * 12 if stage == "report" else real(stage))
    found = status(params, "tiny", out)
    assert stale_pairs(found) == REPORT and "report code changed" in _reasons(found, "report", "report")
    monkeypatch.setattr(status_module, "code_digest", lambda stage: "0" * 12 if stage == "train" else real(stage))
    found = status(params, "tiny", out)
    assert stale_pairs(found) == {(r, s) for r in RUNS for s in ("train", "evaluate")} | REPORT
    assert "training code changed" in _reasons(found, "fcn", "train")
    monkeypatch.undo()

    root = Path(params["profiles"]["tiny"]["data"]["root"])
    moved = tmp_path / "prepared"
    shutil.copytree(root / "voc", moved / "voc", ignore=shutil.ignore_patterns("*.png", "*.jpg", "*.npy"))
    meta = json.loads((moved / "voc/meta.json").read_text())
    (moved / "voc/meta.json").write_text(json.dumps({**meta, "label_checksum": "changed"}))
    params["profiles"]["tiny"]["data"]["root"] = str(moved)
    found = status(params, "tiny", out)
    assert stale_pairs(found) == {(r, s) for r in RUNS for s in ("train", "evaluate")} | REPORT
    assert "training data changed" in _reasons(found, "ema512", "train")


def test_old_and_unfinished_folders_and_later_evaluations(copy_of):
    params, out = copy_of
    info = json.loads((out / "runs/fcn/run.json").read_text())
    del info["identity"]
    (out / "runs/fcn/run.json").write_text(json.dumps({**info, "config_hash": "0123abcd4567"}))
    ft = json.loads((out / "runs/ema512_ft/run.json").read_text())
    ft["evaluations"]["ms"]["finished"] = "2099-01-01T00:00:00+00:00"  # evaluated again after the report
    (out / "runs/ema512_ft/run.json").write_text(json.dumps(ft))
    found = status(params, "tiny", out)
    assert stale_pairs(found) == {("fcn", "train"), ("fcn", "evaluate")} | REPORT
    assert "older emanet" in _reasons(found, "fcn", "train")
    assert "ema512_ft was evaluated after the report" in _reasons(found, "report", "report")
    (out / "runs/ema512/model.pt").unlink()
    found = status(params, "tiny", out)
    assert found["runs"]["ema512"]["state"] == "unfinished" and "training unfinished" in _reasons(
        found, "ema512", "train"
    )
    assert ("ema512_ft", "train") in stale_pairs(found)


def test_the_command_and_the_report_marks(copy_of, tmp_path):
    params, out = copy_of
    path = _write(params, tmp_path / "params.yaml")
    args = ["status", "--params", str(path), "--profile", "tiny", "--out", str(out)]
    assert _ok(emanet([*args, "--check"])).stdout.startswith("profile tiny")
    params["profiles"]["tiny"]["eval"]["scales"] = [0.5, 1.0]
    _write(params, path)
    proc = emanet([*args, "--json", "--check"])
    assert proc.returncode == 1, proc.stderr
    found = json.loads(proc.stdout)
    assert {s["stage"] for s in found["runs"]["fcn"]["stale"]} == {"evaluate"}
    assert "ms: evaluation settings changed: protocols.ms.scales" in found["runs"]["fcn"]["stale"][0]["reason"]
    assert _ok(emanet([*args, "--json"])).returncode == 0
    table = (build_report(params, "tiny", out).parent / "t.md").read_text()
    fcn = next(line for line in table.splitlines() if line.startswith("| fcn"))
    ss, ms = fcn.split(" | ")[1:3]
    assert "(stale)" in ms and "(stale)" not in ss, fcn
    assert "fcn, MS: (stale) ms: evaluation settings changed" in table


def test_an_identity_recorded_under_older_rules_is_still_current(copy_of):
    """A run trained when data.val_split was in the training identity is neither stale nor set aside."""
    from emanet.runs import folder
    from emanet.runs.identity import digest

    params, out = copy_of
    path = out / "runs/fcn/run.json"
    info = json.loads(path.read_text())
    values = info["identity"]["training"]["values"]
    values["data"]["val_split"] = "val"
    info["identity"]["training"] = {"digest": digest(values), "values": values}
    path.write_text(json.dumps(info))
    assert stale_pairs(status(params, "tiny", out)) == set()
    from emanet.config import resolve
    from emanet.engine.train import run_identity

    now = run_identity(resolve(params, "tiny", experiment="fcn"), out / "runs/fcn")
    assert folder.resume_conflict(info, now) is None


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda p: p.write_text('{"identity": {"train'), "run.json unreadable: not valid JSON"),
        (lambda p: p.write_text("[1, 2]"), "run.json unreadable: holds a list, not a JSON object"),
        (lambda p: _edit(p, identity="abc"), "run.json unreadable: identity is a str, not an object"),
        (lambda p: _edit(p, train=[1]), "run.json unreadable: train is a list, not an object"),
        (lambda p: _edit(p, model=5), "run.json unreadable: model is a int, not an object"),
        (lambda p: _edit(p, evaluations=[]), "run.json unreadable: evaluations is a list, not an object"),
        (lambda p: p.write_text("{}"), "no record: run.json holds nothing"),
        (lambda p: shutil.rmtree(p.parent), "not made"),
    ],
)
def test_a_damaged_or_removed_run_is_flagged_and_the_rest_goes_on(copy_of, tmp_path, damage, words):
    params, out = copy_of
    damage(out / "runs/fcn/run.json")
    found = status(params, "tiny", out)
    assert {run for run, _ in stale_pairs(found)} == {"fcn", "report"}, found
    train = _reasons(found, "fcn", "train")
    assert train.startswith(words) and "rerun or remove the folder" in train or words == "not made", train
    assert found["runs"]["fcn"]["state"] == ("not made" if words == "not made" else "unfinished")
    report = _reasons(found, "report", "report")
    assert "evaluated after the report" not in report and "older emanet" not in json.dumps(found), report
    assert "fcn: " + ("not made" if words == "not made" else "") in report or "unreadable" in report, report
    path = _write(params, tmp_path / "params.yaml")
    args = ["status", "--params", str(path), "--profile", "tiny", "--out", str(out)]
    assert _ok(emanet(args)).stdout.count("fcn") >= 1
    assert emanet([*args, "--check"]).returncode == 1
    table = (build_report(params, "tiny", out).parent / "t.md").read_text()  # the report goes on
    assert "| ema512 " in table


def _edit(path: Path, **values) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


def test_the_report_describes_the_evaluation_a_run_was_last_evaluated_with(copy_of, tmp_path):
    """An evaluation-only edit (eval.output_stride) evaluated again: the report's setting says the new stride,
    not the one run.json's params recorded at training."""
    params, out = copy_of
    sentence = next(line for line in _table(params, out).splitlines() if line.startswith("*This report:"))
    assert "OS 8" in sentence and "test OS 16" not in sentence, sentence
    params["profiles"]["tiny"]["eval"]["output_stride"] = 16
    path = _write(params, tmp_path / "params.yaml")
    common = ["--experiment", "fcn", "--params", str(path), "--profile", "tiny", "--out", str(out)]
    _ok(emanet(["evaluate", *common, "--for-tables"]))
    info = json.loads((out / "runs/fcn/run.json").read_text())
    assert info["params"]["eval.output_stride"] is None  # training's record, unchanged
    sentence = next(line for line in _table(params, out).splitlines() if line.startswith("*This report:"))
    assert "train OS 8 / test OS 16 (fcn)" in sentence, sentence
    assert ("fcn", "evaluate") not in stale_pairs(status(params, "tiny", out))


def _table(params: dict, out: Path) -> str:
    return (build_report(params, "tiny", out).parent / "t.md").read_text()


def test_the_cost_columns_are_stale_when_the_code_counting_them_changed(copy_of, monkeypatch):
    params, out = copy_of
    real = status_module.code_digest
    monkeypatch.setattr(status_module, "code_digest", lambda s: "0" * 12 if s == "complexity" else real(s))
    found = status(params, "tiny", out)
    assert stale_pairs(found) == {("complexity", "complexity")} | REPORT, found
    assert found["complexity"]["stale"][0]["reason"].startswith("complexity code changed (digest ")
    assert "bench/complexity.json" in _reasons(found, "report", "report")
    monkeypatch.undo()
    path = out / "bench/complexity.json"
    recorded = json.loads(path.read_text())
    assert stale_pairs(status(params, "tiny", out)) == set() and recorded["code"]["complexity"]
    path.write_text(json.dumps({k: v for k, v in recorded.items() if k != "code"}))
    found = status(params, "tiny", out)
    assert "older emanet" in found["complexity"]["stale"][0]["reason"] and found["complexity"]["state"] == "finished"
    path.unlink()
    found = status(params, "tiny", out)
    assert found["complexity"] == {"state": "not made", "stale": [{"stage": "complexity", "reason": "not made"}]}
