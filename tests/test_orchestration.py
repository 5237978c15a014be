"""Snakemake and DVC declare the same stages and outputs, and both really run the pipeline."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from emanet import plan
from emanet.config import load_params
from tests.helpers.runs import THREADS

BIN = Path(sys.executable).parent
PIPELINE_FILES = (
    "Snakefile",
    "workflow",
    "profiles",
    "dvc.yaml",
    ".dvcignore",
    "params.yaml",
    "environment.yml",
    "emanet",
)
KEEP = ("ema512", "fcn")
#: a Table 2-like chain: ema512's weights fine-tuned on trainval, then VOC test packaged and scored
FINETUNE = {
    "ema512_trainval": {
        "data": {"dataset": "voc", "train_split": "trainval"},
        "eval": {"dataset": "voc_test", "split": "test"},
        "train": {"init_from": "ema512", "iterations": 10},
    }
}


def _run(cmd: list[str], cwd: Path, timeout: float = 900, stderr: bool = True, venv_on_path: bool = True) -> str:
    """Run an orchestrator with one thread per job whatever the host sets (CPU results depend on it); its
    output (stdout, then stderr unless ``stderr`` is false). ``venv_on_path``: the venv's bin folder first on
    PATH (else removed from it, as for `.venv/bin/dvc repro` without an activated venv)."""
    path = [p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != BIN]
    env = dict(
        os.environ,
        PATH=os.pathsep.join([str(BIN)] * venv_on_path + path),
        DVC_NO_ANALYTICS="1",
        OMP_NUM_THREADS=THREADS,
        MKL_NUM_THREADS=THREADS,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@localhost",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@localhost",
        MLFLOW_TRACKING_URI=f"sqlite:///{cwd}/mlflow.db",
    )
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr if stderr else proc.stdout


def _copy_project(root: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in PIPELINE_FILES:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)
    return dest


def cut_down(params: dict, iterations: int = 30) -> dict:
    """The tiny profile with two experiments on VOC and one finetune of one of them evaluated on VOC test,
    the tables reduced to the rows they fill."""
    params["experiments"] = {k: v for k, v in params["experiments"].items() if k in KEEP}
    params["finetunes"] = FINETUNE
    params["datasets"] = ["voc", "voc_test"]
    tables = {}
    for name, table in params["tables"].items():
        rows = [
            {**r, "experiment": "ema512_trainval"} if r.get("experiment") == "coco_r101_trainval" else r
            for r in table["rows"]
        ]
        rows = [r for r in rows if r.get("experiment", KEEP[0]) in (*KEEP, *FINETUNE)]
        if any("experiment" in r for r in rows):
            tables[name] = {**table, "rows": rows}
    params["tables"] = tables
    params["figures"] = {k: v for k, v in (params.get("figures") or {}).items() if v.get("table") in tables}
    params["profiles"]["tiny"]["train"]["iterations"] = iterations
    params["profiles"]["tiny"]["experiments"] = {}
    return params


def test_both_orchestrators_declare_the_same_stages_and_outputs(root):
    params = load_params(root / "params.yaml")
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    rules = set(
        re.findall(r"^(\w+)\s+\d+$", _run([str(BIN / "snakemake"), "-n", "--forceall", "--quiet", "rules"], root), re.M)
    ) - {"all", "total"}
    # configure: Snakemake runs it when it parses the Snakefile; evaluate_finetune: the evaluate rule's finetunes
    assert set(dvc) - {"configure", "evaluate_finetune"} == rules
    profile = params["profile"]
    expanded = set()
    for name, stage in dvc.items():
        if name == "configure":  # its folder holds files Snakemake writes when it parses, not a rule's outputs
            continue
        items = params[stage["foreach"][2:-1]] if "foreach" in stage else [None]
        body = stage.get("do", stage)
        for item in items:
            for out in body.get("outs", []) + body.get("metrics", []):
                path = next(iter(out)) if isinstance(out, dict) else out
                expanded.add(
                    path.replace("${profile}", profile).replace("${item}", str(item)).replace("${key}", str(item))
                )
    dry = _run([str(BIN / "snakemake"), "-n", "--forceall"], root)
    smk_outputs = set(re.findall(r"^\s+output: (.+)$", dry, re.M))
    smk_outputs = {p.strip() for line in smk_outputs for p in line.split(",")}
    assert expanded == smk_outputs
    assert {f"results/{profile}/runs/{e}/model.pt" for e in plan.experiments(params)} <= expanded


def test_dvc_stages_depend_on_exactly_the_code_and_identity_files_of_their_stage(root):
    """Each stage's code dependencies are emanet.runs.code.STAGE_CODE's list for it (what run.json's code digest
    covers, and `emanet status` compares), its identity a file of the configure step, and no params section
    (an edit of a cadence or of another profile would rerun it)."""
    from emanet.runs.code import STAGE_CODE

    dvc = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    code_of = {"train": "train", "finetune": "train", "evaluate": "evaluate", "evaluate_finetune": "evaluate"}
    identity_of = {"train": "train.json", "finetune": "train.json", "evaluate": "evaluate.json"}
    identity_of |= {"evaluate_finetune": "evaluate.json"}
    for name, stage in {**code_of, "report": "report"}.items():
        body = dvc[name].get("do", dvc[name])
        deps = body["deps"]
        assert [d for d in deps if d.startswith("emanet/")] == list(STAGE_CODE[stage]), name
        assert "params" not in body, name
        config = "results/${profile}/configs/" + ("report.json" if name == "report" else "${key}/" + identity_of[name])
        assert config in deps, name
    complexity = dvc["complexity"]["deps"]  # Table 1's costs: no settings, only code
    assert [d for d in complexity if d.startswith("emanet/")] == list(STAGE_CODE["complexity"]) == complexity
    assert all((root / path).exists() for paths in STAGE_CODE.values() for path in paths)
    assert dvc["configure"]["always_changed"] is True
    assert dvc["configure"]["outs"] == [{"results/${profile}/configs": {"cache": False, "persist": True}}]
    assert all(
        stage.get("do", stage)["cmd"].startswith(
            ("workflow/emanet ", "mkdir -p data/${profile}/synth && workflow/emanet ")
        )
        for stage in dvc.values()
    )


def test_snakemake_lint_is_clean(root):
    assert "good condition" in _run([str(BIN / "snakemake"), "--lint"], root)


@pytest.mark.slow
def test_snakemake_and_dvc_run_the_pipeline_to_the_same_metrics(tmp_path, root):
    smk = _copy_project(root, tmp_path / "smk")
    dvc = _copy_project(root, tmp_path / "dvc")
    for work in (smk, dvc):
        params = cut_down(yaml.safe_load((work / "params.yaml").read_text()))
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # the exact equality below holds by construction only if every job pins its threads and algorithms
    tiny_train = params["profiles"]["tiny"]["train"]
    assert (tiny_train["cpu_threads"], tiny_train["deterministic"], tiny_train["device"]) == (1, True, "cpu")

    _run([str(BIN / "snakemake"), "-c2"], smk)
    report = smk / "results/tiny/report/report.html"
    assert report.exists() and "NOT comparable" in report.read_text()
    start = time.monotonic()
    assert "Nothing to be done" in _run([str(BIN / "snakemake"), "-c2"], smk)
    assert time.monotonic() - start < 60

    _run(["git", "init", "-q"], dvc)
    _run([str(BIN / "dvc"), "init", "-q"], dvc)
    _run([str(BIN / "dvc"), "repro"], dvc)
    for experiment in [*KEEP, *FINETUNE]:
        by_smk = json.loads((smk / f"results/tiny/runs/{experiment}/metrics.json").read_text())
        by_dvc = json.loads((dvc / f"results/tiny/runs/{experiment}/metrics.json").read_text())
        assert by_smk["confusion_matrix"] == by_dvc["confusion_matrix"], experiment
        assert by_smk["evaluation_identity"] == by_dvc["evaluation_identity"]
    tarball = "results/tiny/runs/ema512_trainval/submission_ms_flip.tar.gz"
    assert (smk / tarball).read_bytes() == (dvc / tarball).read_bytes()
    assert json.loads((smk / "results/tiny/runs/ema512_trainval/run.json").read_text())["identity"]["init_sha256"]
    start = time.monotonic()
    again = _run([str(BIN / "dvc"), "repro"], dvc)
    # only the configure stage runs (always changed, writing nothing); every other stage is skipped
    ran = set(re.findall(r"Running stage '([^']+)'", again))
    assert ran == {"configure"} and "0 written" in again, again[-2000:]
    assert time.monotonic() - start < 60

    # changing one experiment's params reruns only that experiment
    params = yaml.safe_load((smk / "params.yaml").read_text())
    params["experiments"]["fcn"]["model"]["dropout"] = 0.2
    (smk / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dry = _run([str(BIN / "snakemake"), "-n", "-c2"], smk)
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", dry, re.M))
    assert jobs.get("train") == "1" and jobs.get("evaluate") == "1" and "finetune" not in jobs, dry[-2000:]

    # retraining the parent reruns its finetune, which sets the old fine-tuned run aside
    params["experiments"]["ema512"]["model"] = {"dropout": 0.2}
    (smk / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run([str(BIN / "snakemake"), "-c2"], smk)
    assert list((smk / "results/tiny/runs").glob("ema512_trainval.replaced-*"))


def test_configure_writes_an_identity_file_only_when_it_changes_and_drops_removed_runs(tmp_path, root):
    from emanet.runs.configure import configure

    params = load_params(root / "params.yaml")
    first = configure(params, "tiny", tmp_path)
    runs = plan.runs(params)
    assert sorted(first["written"]) == sorted(
        ["report.json", "weights.json", *(f"{r}/{f}" for r in runs for f in ("train.json", "evaluate.json"))]
    )
    times = {p: p.stat().st_mtime_ns for p in (tmp_path / "configs").rglob("*.json")}
    params["profiles"]["tiny"]["train"]["log_interval"] = 1  # a cadence: no identity changes
    params["profiles"]["paper"]["train"] = {"iterations": 5}  # another profile
    assert configure(params, "tiny", tmp_path)["written"] == []
    assert {p: p.stat().st_mtime_ns for p in times} == times
    params["profiles"]["tiny"]["eval"]["scales"] = [1.0, 2.0]  # only multi-scale protocols' evaluations
    written = configure(params, "tiny", tmp_path)["written"]
    assert written and all(p.endswith("/evaluate.json") for p in written)
    assert set(written) == {f"{r}/evaluate.json" for r in runs if any("ms" in p[:2] for p in plan.protocols(params, r))}
    del params["experiments"]["k16"]
    params["tables"]["k_sweep"]["rows"] = [r for r in params["tables"]["k_sweep"]["rows"] if r["experiment"] != "k16"]
    done = configure(params, "tiny", tmp_path)
    assert done["removed"] == ["k16/evaluate.json", "k16/train.json"] and not (tmp_path / "configs/k16").exists()
    assert done["written"] == ["report.json"]


def test_a_run_needing_another_checkpoint_reruns_weights_and_moving_the_venv_reruns_nothing(tmp_path, root):
    """The weights rule's params (the checkpoints the runs need) trigger it (--rerun-triggers params), while
    no rule's params hold the interpreter's path: Snakemake started through another path to the same venv
    (a moved clone or venv) finds nothing to do."""
    project = _copy_project(root, tmp_path / "p")
    params = cut_down(load_params(root / "params.yaml"))
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    receipt = "data/tiny/weights/receipt.json"
    _run([str(BIN / "snakemake"), "-c1", receipt], project)
    records = [json.loads(p.read_text()) for p in (project / ".snakemake/metadata").iterdir()]
    assert records and not [r for r in records if any(str(BIN) in p for p in r.get("params") or [])]
    moved = tmp_path / "moved-venv"
    moved.symlink_to(BIN.parent, target_is_directory=True)
    dry = _run([str(moved / "bin/python"), "-m", "snakemake", "-n", receipt], project)
    assert "Nothing to be done" in dry, dry

    params["experiments"]["r152"] = {"data": {"dataset": "voc"}, "model": {"backbone": "resnet152"}}
    params["profiles"]["tiny"]["experiments"] = {"r152": {"model": {"backbone": "resnet152", "pretrained": "imagenet"}}}
    assert plan.weights(params, "tiny")  # the tiny profile needs an ImageNet checkpoint now
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dry = _run([str(BIN / "snakemake"), receipt, "-n", "--quiet", "rules"], project)
    assert re.search(r"^weights\s+1$", dry, re.M), dry
    assert "params" in _run([str(BIN / "snakemake"), "-n", receipt], project)  # the reason Snakemake gives


@pytest.mark.parametrize("in_the_way", ["folder at a file", "file at the configs folder", "file at a run's folder"])
def test_configure_names_what_is_in_the_way_and_writes_nothing(tmp_path, root, in_the_way):
    from emanet.runs.configure import ConfigureError, configure
    from tests.helpers.runs import emanet

    params = load_params(root / "params.yaml")
    run = plan.runs(params)[0]
    configs = tmp_path / "configs"
    if in_the_way == "folder at a file":
        (configs / run / "train.json").mkdir(parents=True)
        blocked, words = configs / run / "train.json", "is a folder, not a file: remove it"
    elif in_the_way == "file at the configs folder":
        tmp_path.mkdir(exist_ok=True)
        configs.write_text("")
        blocked, words = configs, "is a file, not a folder: remove or move it"
    else:
        configs.mkdir()
        (configs / run).write_text("")
        blocked, words = configs / run, "is a file, not a folder: remove or move it"
    with pytest.raises(ConfigureError, match=re.escape(f"{blocked} {words}")):
        configure(params, None, tmp_path)
    assert not [p for p in tmp_path.rglob("*.json") if p.is_file()]  # nothing written
    proc = emanet(["configure", "--params", str(root / "params.yaml"), "--out", str(tmp_path)])
    assert proc.returncode == 2 and f"emanet: error: {blocked} {words}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
