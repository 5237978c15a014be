"""Fixed-choice settings are typed (``Literal``) and checked when params.yaml is loaded, for every run in every
profile at once (:func:`emanet.config.check_all`), each error naming the key where params.yaml writes it, the bad
value and the allowed values; the choices agree with the code that branches on them."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import typing

import pytest
import torch
import yaml

from emanet import config as C
from emanet.cli import main
from emanet.config import ParamsError, check_all, load_params, resolve


@pytest.fixture
def params(root) -> dict:
    return load_params(root / "params.yaml")


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def test_every_run_of_every_profile_resolves(params):
    configs = check_all(params)
    runs = [*params["experiments"], *params["finetunes"]]
    assert set(configs) == set(params["profiles"]) and all(list(c) == runs for c in configs.values())
    assert configs["paper"]["k16"] == resolve(params, "paper", experiment="k16")


@pytest.mark.parametrize(
    "dotted, bad, written, choices",
    [
        ("experiments.k16.model.ema.norm", "l3", "experiments.k16.model.ema.norm", "'l2', 'layer', 'none'"),
        ("profiles.paper.train.amp", "bf61", "profiles.paper.train.amp", "'none', 'bf16', 'fp16'"),
        (
            "profiles.tiny.experiments.ema256.model.head",
            "emma",
            "profiles.tiny.experiments.ema256.model.head",
            "'ema', 'fcn', 'nonlocal', 'a2', 'aspp'",
        ),
        ("finetunes.coco_r101_trainaug.train.device", "gpu", "finetunes.coco_r101_trainaug.train.device", None),
        ("model.ema.maintenance", "ema", "model.ema.maintenance", "'moving_average', 'none', 'gradient'"),
        ("train.loss_normalization", "valid", "train.loss_normalization", "'all_pixels', 'valid_pixels'"),
        ("model.stem", "v1c", "profiles.tiny.model.stem", "'deep', 'torchvision'"),  # tiny overrides the base
        ("eval.output_stride", True, "eval.output_stride", "8, 16, 32"),  # YAML's true is not 1
    ],
)
def test_a_typo_anywhere_fails_check_all_naming_where_it_is_written(params, dotted, bad, written, choices):
    _set(params, dotted, bad)
    if dotted == "model.stem":  # the base's stem is overridden by tiny: the typo is blamed where it takes effect
        _set(params, "profiles.tiny.model.stem", bad)
    with pytest.raises(ParamsError) as caught:
        check_all(params)
    lines = caught.value.problems
    assert len(lines) == 1 + (dotted == "model.stem"), lines
    assert lines[-1].startswith(f"{written}: expected one of ") and lines[-1].count(repr(bad)) == 1, lines
    if choices:
        assert choices in lines[-1]


def test_several_typos_are_reported_at_once_with_the_profiles_they_fail_in(params):
    _set(params, "experiments.k16.model.ema.norm", "l3")
    _set(params, "profiles.paper.train.amp", "bf61")
    _set(params, "profiles.paper.model.backbone", "resnet18")
    del params["profiles"]["tiny"]["model"]["backbone"]  # tiny: resnet101 again, paper: resnet18
    _set(params, "model.backbone", "resnet34")  # ... and the base is wrong in tiny only
    with pytest.raises(ParamsError) as caught:
        check_all(params)
    message = str(caught.value)
    assert message.startswith("4 invalid settings:\n  ")
    assert "\n  model.backbone: expected one of 'resnet_tiny', 'resnet50', 'resnet101', 'resnet152', got " in message
    assert "got 'resnet34' (in profile tiny)" in message
    assert "profiles.paper.model.backbone: expected one of" in message and "got 'resnet18'" in message
    assert message.count("experiments.k16.model.ema.norm") == 1  # once, though both profiles resolve k16


def test_resolve_names_the_layer_of_a_bad_value(params):
    with pytest.raises(ParamsError, match=r"^--set train\.amp: expected one of 'none', 'bf16', 'fp16', got 'x'$"):
        resolve(params, "tiny", ["train.amp=x"])
    _set(params, "experiments.k16.model.ema.nrom", "l2")
    with pytest.raises(ParamsError, match=r"unknown key 'experiments\.k16\.model\.ema\.nrom'"):
        resolve(params, "tiny", experiment="k16")
    _set(params, "profiles.tiny.eval.scales", [0.75, "1.0"])
    with pytest.raises(ParamsError, match=r"profiles\.tiny\.eval\.scales\[1\]: expected float, got '1\.0'"):
        resolve(params, "tiny")


def test_unknown_default_profile_fails_check_all(params):
    params["profile"] = "huge"
    with pytest.raises(ParamsError, match="profile: unknown profile 'huge'"):
        check_all(params)


def test_typed_config_stays_frozen_plain_and_without_eval_flip(params):
    cfg = resolve(params, "paper", experiment="r50_fixed_layer")
    values = cfg.to_dict()
    assert yaml.safe_load(yaml.safe_dump(values)) == values  # plain values only: lists, str, int, float, None
    assert values["model"]["ema"] == {**values["model"]["ema"], "maintenance": "none", "norm": "layer"}
    assert isinstance(values["train"]["lr"], float) and values["eval"]["output_stride"] == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.ema.norm = "l2"  # type: ignore[misc]
    assert "flip" not in {f.name for f in dataclasses.fields(C.EvalConfig)} and "flip" not in params["eval"]
    with pytest.raises(ParamsError, match="unknown key 'eval.flip'"):
        resolve(params, "tiny", ["eval.flip=true"])


def test_the_choices_are_those_the_code_branches_on(tiny_config):
    from emanet.engine import dist
    from emanet.engine.train import AMP_DTYPES
    from emanet.models import ema, heads, resnet
    from emanet.models.loss import segmentation_loss

    args = typing.get_args
    assert set(args(C.Backbone)) == set(resnet.DEPTHS)
    assert set(args(C.OutputStride)) == set(resnet._STAGE_GEOMETRY) == set(heads._ASPP_RATES)
    assert args(C.Stem) == resnet.STEMS and args(C.Head) == heads.HEADS
    assert args(C.Maintenance) == ema.MAINTENANCE and args(C.Norm) == ema.NORMS
    assert set(args(C.Amp)) == {"none", *AMP_DTYPES}
    for norm in args(C.Norm):
        assert ema.normalize_bases(torch.ones(1, 2, 3), norm).shape == (1, 2, 3)
    logits, labels = torch.zeros(1, 3, 2, 2), torch.tensor([[[0, 1], [2, 255]]])
    losses = {n: float(segmentation_loss(logits, labels, 255, n)) for n in args(C.LossNormalization)}
    assert len(set(losses.values())) == len(losses)  # each normalisation is a branch of its own
    assert dist.resolve_device("cpu").type == "cpu" and dist.resolve_device("auto").type in ("cpu", "cuda")
    assert set(args(C.Device)) == {"auto", "cpu", "cuda"}


def test_check_params_exits_2_naming_the_key(tmp_path, params, capsys):
    _set(params, "profiles.tiny.experiments.ema256.model.head", "emma")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    assert main(["check-params", "--params", str(path)]) == 2
    err = capsys.readouterr().err
    assert "profiles.tiny.experiments.ema256.model.head: expected one of 'ema', 'fcn'" in err and "'emma'" in err


def test_snakemake_dry_run_fails_on_a_typo_in_the_profile_not_in_use(root, tmp_path):
    """The default profile is tiny; a typo in the paper profile stops `snakemake -n` while it reads the
    workflow, naming params.yaml and the key."""
    from tests.test_orchestration import BIN, _copy_project

    work = _copy_project(root, tmp_path / "work")
    text = (work / "params.yaml").read_text()
    bad = text.replace("  paper:\n    model:\n", "  paper:\n    train: {amp: bf61}\n    model:\n")
    assert bad != text and load_params(root / "params.yaml")["profile"] == "tiny"
    (work / "params.yaml").write_text(bad)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1")
    smk = subprocess.run([str(BIN / "snakemake"), "-n"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    out = smk.stdout + smk.stderr
    assert smk.returncode != 0, out[-2000:]
    assert "params.yaml: profiles.paper.train.amp: expected one of 'none', 'bf16', 'fp16', got 'bf61'" in out, out[
        -2000:
    ]
    assert "Traceback" not in out


def test_a_bad_value_set_by_hand_is_still_refused_by_the_constructors(tiny_config):
    from emanet.models import build_model

    bad = dataclasses.replace(tiny_config.model, ema=dataclasses.replace(tiny_config.model.ema, norm="batch"))
    with pytest.raises(ValueError, match="norm must be one of"):
        build_model(bad, 3)
    with pytest.raises(ValueError, match="unknown head"):
        build_model(dataclasses.replace(tiny_config.model, head="unet"), 3)


@pytest.mark.parametrize(
    "profile, name, suggestion",
    [("tiny", "ema265", "'ema256'"), ("paper", "r50_t3", "'r50_t"), ("tiny", "unrelated", None)],
)
def test_a_profile_override_of_no_run_fails_naming_it_and_the_closest_run(params, profile, name, suggestion):
    params["profiles"][profile]["experiments"][name] = {"model": {"head": "not even checked"}}
    with pytest.raises(ParamsError) as caught:
        check_all(params)
    (line,) = caught.value.problems
    assert line.startswith(f"profiles.{profile}.experiments.{name}: {name!r} is not an experiment or finetune"), line
    assert (f"did you mean {suggestion}" in line) if suggestion else "did you mean" not in line, line
    with pytest.raises(ParamsError, match=f"profiles.{profile}.experiments.{name}"):
        resolve(params, profile)  # every resolve in that profile refuses it, not only check_all


@pytest.mark.parametrize(
    "dotted, bad, written, allowed",
    [
        ("experiments.k16.eval.split", "vall", "experiments.k16.eval.split", "'train', 'val', 'trainval', 'trainaug'"),
        ("data.train_split", "trainaugg", "data.train_split", "(the splits of voc)"),
        ("experiments.context_ema512.data.val_split", "trainaug", "experiments.context_ema512.data.val_split", "'val'"),
        ("finetunes.coco_r101_trainval.eval.split", "val", "finetunes.coco_r101_trainval.eval.split", "'test' (the"),
        ("experiments.k16.data.dataset", "vco", "experiments.k16.data.dataset", "'voc', 'voc_test', 'context'"),
        ("finetunes.coco_r152_trainaug.eval.dataset", "voc_tset", "finetunes.coco_r152_trainaug.eval.dataset", None),
        ("profiles.paper.eval.split", "tset", "profiles.paper.eval.split", "(the splits of voc)"),
    ],
)
def test_a_dataset_or_split_typo_fails_check_all_naming_the_key_and_the_choices(params, dotted, bad, written, allowed):
    _set(params, dotted, bad)
    with pytest.raises(ParamsError) as caught:
        check_all(params)
    lines = caught.value.problems
    assert any(line.startswith(f"{written}: expected one of ") and line.endswith(f"got {bad!r}") for line in lines), (
        lines
    )
    if allowed:
        assert any(allowed in line for line in lines if line.startswith(written)), lines
    if dotted.endswith(".split") and "paper" not in dotted:
        assert len(lines) == 1, lines  # one run's split: one line, not one per profile


def test_every_split_the_params_use_is_one_prepare_writes(params):
    from emanet.data.convert.official import splits

    for runs in check_all(params).values():
        for cfg in runs.values():
            assert {cfg.data.train_split, cfg.data.val_split} <= set(splits(cfg.data.dataset))
            assert cfg.eval.split in splits(cfg.eval.dataset or cfg.data.dataset)


@pytest.mark.parametrize("run, profiles", [("fcn", None), ("nonlocal", None), ("ema512", "tiny")])
def test_a_responsibilities_figure_of_a_run_without_an_ema_head_fails_at_load(params, run, profiles):
    if profiles:  # the head is changed in one profile only: the error says which
        params["profiles"][profiles]["experiments"][run] = {"model": {"head": "aspp"}}
    else:
        params["tables"]["table1"]["rows"].append({"label": run, "experiment": run})
    params["figures"]["responsibilities"]["experiment"] = run
    with pytest.raises(ParamsError) as caught:
        check_all(params)
    (line,) = caught.value.problems
    assert line.startswith("figures.responsibilities.experiment: a responsibilities figure draws"), line
    assert f"but {run!r} has model.head" in line and "model.head 'ema'" in line
    assert line.endswith(f"(in profile {profiles})") if profiles else "(in profile" not in line


def test_check_params_and_configure_fail_on_an_override_of_no_run_and_a_split_typo(tmp_path, params, capsys):
    params["profiles"]["tiny"]["experiments"]["ema265"] = {"model": {"head_channels": 32}}
    _set(params, "experiments.k16.eval.split", "vall")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (
        ["check-params", "--params", str(path)],
        ["configure", "--params", str(path), "--out", str(tmp_path / "results")],
    ):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert "profiles.tiny.experiments.ema265: 'ema265' is not an experiment or finetune" in err, err
        assert "experiments.k16.eval.split: expected one of" in err and "got 'vall'" in err, err
    assert not (tmp_path / "results").exists()


def test_snakemake_dry_run_fails_on_an_override_of_no_run_and_a_split_typo(root, tmp_path):
    from tests.test_orchestration import BIN, _copy_project

    work = _copy_project(root, tmp_path / "work")
    text = (work / "params.yaml").read_text()
    bad = text.replace("      ema256: {model: {head_channels: 32}}\n", "      ema265: {model: {head_channels: 32}}\n")
    bad = bad.replace("  k16: {data: {dataset: voc}, ", "  k16: {data: {dataset: voc}, eval: {split: vall}, ")
    assert bad.count("ema265") == 1 and bad.count("vall") == 1
    (work / "params.yaml").write_text(bad)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1")
    smk = subprocess.run([str(BIN / "snakemake"), "-n"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    out = smk.stdout + smk.stderr
    assert smk.returncode != 0, out[-2000:]
    assert "profiles.tiny.experiments.ema265: 'ema265' is not an experiment or finetune; did you mean 'ema256'?" in out
    assert "experiments.k16.eval.split: expected one of 'train', 'val', 'trainval', 'trainaug'" in out, out[-2000:]
    assert "Traceback" not in out and not (work / "results").exists()
