"""What a training log shows (stderr not a terminal): mmseg-style lines, train_log.csv's columns, run.json's
times and environment, and optional validation during training that leaves the training unchanged."""

from __future__ import annotations

import csv
import json

from tests.conftest import ROOT
from tests.helpers.runs import emanet, run_args

SHORT = ("train.iterations=4", "train.batch_size=2", "train.checkpoint_interval=4", "train.log_interval=2")


def _rows(run_dir) -> list[dict]:
    with open(run_dir / "train_log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_progress_lines_log_columns_and_run_record(tmp_path, prepared_root):
    plain = emanet(run_args("train", tmp_path / "plain", prepared_root, *SHORT))
    assert plain.returncode == 0, plain.stderr[-3000:]
    validated = emanet(run_args("train", tmp_path / "val", prepared_root, *SHORT, "train.eval_interval=3"))
    assert validated.returncode == 0, validated.stderr[-3000:]
    err = plain.stderr
    assert "\r" not in err and "CUDA_HOME" not in err
    lines = [line for line in err.splitlines() if line.startswith("train ema512: ")]
    assert [line.split()[2] for line in lines] == ["2/4", "4/4"], err
    for field in ("ETA", "loss: ", "lr: ", "time: ", "data_time: ", "images_per_s: "):
        assert field in lines[0], lines[0]
    plain_rows, val_rows = _rows(tmp_path / "plain/runs/ema512"), _rows(tmp_path / "val/runs/ema512")
    assert list(plain_rows[0]) == [
        "iteration",
        "loss",
        "lr",
        "images_per_s",
        "elapsed_s",
        "data_s",
        "step_s",
        "max_memory_mib",
        "val_miou",
    ]
    assert [r["iteration"] for r in val_rows] == ["2", "3", "4"]  # the validated iteration gets its row
    assert val_rows[1]["val_miou"] and not val_rows[0]["val_miou"] and 0 <= float(val_rows[1]["val_miou"]) <= 1
    assert any(
        line.startswith("train ema512: 3/4 it") and "val_miou: " in line for line in validated.stderr.splitlines()
    ), validated.stderr
    assert any(line.startswith("validate ema512 voc val ss: ") for line in validated.stderr.splitlines())
    # validation restores the RNG: the training is the same with it
    assert [r["loss"] for r in plain_rows] == [r["loss"] for r in val_rows if r["iteration"] in ("2", "4")]
    info = json.loads((tmp_path / "plain/runs/ema512/run.json").read_text())
    train = info["train"]
    assert train["started"] <= train["finished"] and len(train["sessions"]) == 1
    session = train["sessions"][0]
    assert session["from_iteration"] == 0 and session["finished"] == train["finished"]
    assert {"host", "platform", "python", "torch", "cuda", "cudnn", "gpu", "gpu_count"} <= set(session["environment"])
    assert info["readme"] == "docs/run-folder.md" and (ROOT / info["readme"]).is_file()
    evaluated = emanet(run_args("evaluate", tmp_path / "plain", prepared_root, *SHORT))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    info = json.loads((tmp_path / "plain/runs/ema512/run.json").read_text())
    assert info["train"] == train  # evaluation leaves the training's record alone
    ss = info["evaluations"]["ss"]
    assert train["finished"] <= ss["started"] <= ss["finished"] and ss["environment"]["torch"]


def test_negative_eval_interval_is_refused(tmp_path, prepared_root):
    proc = emanet(run_args("train", tmp_path, prepared_root, *SHORT, "train.eval_interval=-1"))
    assert proc.returncode == 2 and "train.eval_interval must be >= 0" in proc.stderr
