"""Names that become DVC stages, Snakemake wildcards, folders, MLflow runs and table files: one pattern,
checked when params.yaml is read, with the dotted key named; and no key YAML reads as a non-string."""

from __future__ import annotations

import copy
import os
import re
import subprocess

import pytest
import yaml

from emanet.cli import main
from emanet.config import NAME_PATTERN, ConfigError, check_names, load_params, resolve
from tests.helpers.runs import ROOT, emanet


def _load(tmp_path, text: str) -> dict:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return load_params(path)


@pytest.mark.parametrize(
    "text, dotted",
    [
        # keys that YAML reads as something else than text
        ("experiments:\n  2021: {}\n", "experiments.2021"),
        ("experiments:\n  true: {}\n", "experiments.true"),
        ("experiments:\n  no: {}\n", "experiments.false"),
        ("experiments:\n  ~: {}\n", "experiments.null"),
        ("experiments:\n  1.5: {}\n", "experiments.1.5"),
        ("experiments:\n  2021-01-01: {}\n", "experiments.2021-01-01"),
        # text that DVC, Snakemake, the file system or --set would split, mangle or drop
        ("experiments:\n  ema/512: {}\n", "experiments.ema/512"),
        ("experiments:\n  ema.512: {}\n", "experiments.ema.512"),
        ("experiments:\n  Ema512: {}\n", "experiments.Ema512"),
        ("experiments:\n  ema 512: {}\n", "experiments.ema 512"),
        ("experiments:\n  ema-512: {}\n", "experiments.ema-512"),
        ("experiments:\n  ema@512: {}\n", "experiments.ema@512"),
        ("experiments:\n  'ema:512': {}\n", "experiments.ema:512"),
        ("experiments:\n  '': {}\n", "experiments.''"),
        ("experiments:\n  '2021': {}\n", "experiments.2021"),
        ("experiments:\n  _ema: {}\n", "experiments._ema"),
        ("experiments:\n  'no': {}\n", "experiments.no"),
        ("finetunes:\n  on: {}\n", "finetunes.true"),
        ("finetunes:\n  coco/trainval: {}\n", "finetunes.coco/trainval"),
        ("finetunes:\n  Coco_R101: {}\n", "finetunes.Coco_R101"),
        ("tables:\n  2019: {}\n", "tables.2019"),
        ("tables:\n  Table 1: {}\n", "tables.Table 1"),
        ("tables:\n  table.1: {}\n", "tables.table.1"),
        ("datasets: [voc, 2012]\n", "datasets[1]"),
        ("datasets: [voc/aug]\n", "datasets[0]"),
        ("datasets: [VOC]\n", "datasets[0]"),
        ("profiles:\n  Paper: {}\n", "profiles.Paper"),
        ("profiles:\n  1: {}\n", "profiles.1"),
        ("profiles:\n  tiny: {experiments: {2021: {}}}\n", "profiles.tiny.experiments.2021"),
    ],
)
def test_a_bad_name_is_refused_at_load_with_its_dotted_key_the_pattern_and_a_fix(tmp_path, text, dotted):
    with pytest.raises(ConfigError) as error:
        _load(tmp_path, text)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'params.yaml'}: {dotted}: ")
    assert "^[a-z][a-z0-9_]*$" in message and "Rename it, e.g. to '" in message
    suggestion = message.split("Rename it, e.g. to '")[1].split("'")[0]
    assert NAME_PATTERN.fullmatch(suggestion), "the suggested name is itself valid"


@pytest.mark.parametrize(
    "text, message",
    [
        ("model:\n  2021: 1\n", "model.2021: YAML reads this key as an integer, not text"),
        ("train:\n  on: 1\n", "train.true: YAML reads this key as a boolean"),
        (
            "tables:\n  t:\n    rows:\n      - {paper: {1.5: 2}}\n",
            r"tables.t.rows\[0\].paper.1.5: YAML reads this key as a number",
        ),
        ("experiments:\n  a: {}\n  a: {}\n", "key 'a' appears twice in one mapping"),
        ("experiments:\n  ~: {}\n  null: {}\n", "key 'null' appears twice in one mapping"),
        ("experiments: [ema512]\n", "experiments: expected a mapping of name -> settings, got list"),
        ("datasets: voc\n", "datasets: expected a list of dataset names, got str"),
    ],
)
def test_other_keys_must_be_text_and_unique(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


def test_the_shipped_names_and_yaml_anchors_pass(root):
    params = load_params(root / "params.yaml")  # uses &anchors and *aliases for the tiny profile
    names = [*params["experiments"], *params["finetunes"], *params["tables"], *params["profiles"], *params["datasets"]]
    assert all(NAME_PATTERN.fullmatch(n) for n in names) and len(names) > 40


@pytest.mark.parametrize(
    "section, name, dotted",
    [
        ("experiments", 2021, "experiments.2021"),
        ("finetunes", True, "finetunes.true"),
        ("tables", None, "tables.null"),
        ("experiments", "a/b", "experiments.a/b"),
        ("finetunes", "X", "finetunes.X"),
    ],
)
def test_resolve_refuses_a_bad_name_before_any_sort(root, section, name, dotted):
    """Snakemake hands params.yaml to resolve() without load_params: the same check, no TypeError."""
    params = copy.deepcopy(load_params(root / "params.yaml"))
    params[section][name] = copy.deepcopy(params[section][next(iter(params[section]))])
    with pytest.raises(ConfigError, match=f"^{re.escape(dotted)}: "):
        resolve(params, "tiny", experiment="ema512")
    with pytest.raises(ConfigError, match=f"^{re.escape(dotted)}: "):
        check_names(params)


def _params_with(tmp_path, key) -> str:
    """The shipped params.yaml with ema512 copied under ``key``."""
    params = load_params(ROOT / "params.yaml")
    params["experiments"][key] = params["experiments"]["ema512"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return str(path)


def _run_args(command: str, experiment: str, params: str, tmp_path) -> list[str]:
    return [
        command,
        "--experiment",
        experiment,
        "--params",
        params,
        "--profile",
        "tiny",
        "--out",
        str(tmp_path / "out"),
        "--set",
        "tracking.enabled=false",
    ]


def test_cli_train_on_a_numeric_name_exits_2_naming_the_key_without_a_traceback(tmp_path):
    """The reported case, as a user runs it: `emanet train --experiment 2021` (was a TypeError from sorted)."""
    params = _params_with(tmp_path, 2021)
    proc = emanet(_run_args("train", "2021", params, tmp_path), timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"emanet: error: {params}: experiments.2021: YAML reads this name as an integer" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "command, key, experiment",
    [
        ("train", "ema/512", "ema/512"),
        ("evaluate", "Ema512", "Ema512"),
        ("train", True, "true"),
        ("evaluate", 1.5, "1.5"),
    ],
)
def test_cli_exits_2_naming_the_key(tmp_path, capsys, command, key, experiment):
    params = _params_with(tmp_path, key)
    assert main(_run_args(command, experiment, params, tmp_path)) == 2
    shown = key if isinstance(key, str) else yaml.safe_dump(key).split("\n")[0]
    assert f"emanet: error: {params}: experiments.{shown}: " in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_both_orchestrators_stop_at_a_bad_name_and_name_the_key(tmp_path):
    """Snakemake stops while reading the workflow. DVC's foreach would drop the stage silently, so DVC's first
    stage, configure (always run), checks every name: after it succeeded once, adding a bad name makes it stop
    naming the key; every other stage runs an emanet command that reads params.yaml and stops the same way."""
    from tests.test_orchestration import BIN, _copy_project

    work = _copy_project(ROOT, tmp_path / "work")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1", OMP_NUM_THREADS="1")
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q", "-f"]):
        subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True)
    good = subprocess.run(
        [str(BIN / "dvc"), "repro", "configure"], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert good.returncode == 0 and "written" in good.stdout + good.stderr, good.stderr[-2000:]
    text = (work / "params.yaml").read_text()
    bad = text.replace("\nexperiments:\n", "\nexperiments:\n  2021: {data: {dataset: voc}}\n")
    assert bad != text
    (work / "params.yaml").write_text(bad)
    expected = "params.yaml: experiments.2021: YAML reads this name as an integer"
    smk = subprocess.run([str(BIN / "snakemake"), "-n"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert smk.returncode != 0 and expected in smk.stdout + smk.stderr, smk.stderr[-2000:]
    for stage in ("configure", "synth"):
        dvc = subprocess.run(
            [str(BIN / "dvc"), "repro", stage], cwd=work, env=env, capture_output=True, text=True, timeout=300
        )
        assert dvc.returncode != 0 and expected in dvc.stdout + dvc.stderr, (stage, dvc.stderr[-2000:])
        assert "Traceback" not in dvc.stdout + dvc.stderr
