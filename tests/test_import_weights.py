"""Foreign whole-model checkpoints: the official naming, wrappers and nestings, short errors, the catalog
entry of the released model, and an imported run evaluated, reported, tracked and protected like a trained one."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch

from emanet.config import ConfigError, load_params, resolve
from emanet.data.archives.transfer import FetchError
from emanet.engine.evaluate import load_trained, predict
from emanet.engine.import_run import import_weights
from emanet.models import build_model, official
from emanet.models.import_weights import read_foreign
from emanet.models.weights import WeightLoadError, load_model_weights
from emanet.runs.identity import digest, evaluation_identity, training_identity
from tests.conftest import ROOT
from tests.helpers.runs import emanet

PARAMS = load_params(ROOT / "params.yaml")
DEEP = ["model.stem=deep", "model.base_width=64"]  # the official stem, on the tiny backbone


def config(experiment: str = "ema512", *sets: str, profile: str = "tiny"):
    return resolve(PARAMS, profile, ["tracking.enabled=false", *sets], experiment)


def trained_looking(cfg, num_classes: int = 21, seed: int = 1) -> torch.nn.Module:
    """A model whose every tensor differs from a fresh one (BN statistics and counters, bases included)."""
    torch.manual_seed(seed)
    model = build_model(cfg.model, num_classes)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if key.endswith("num_batches_tracked"):
                value.fill_(1234)
            elif key.endswith("running_var"):
                value.copy_(torch.rand_like(value) + 0.5)
            else:
                value.copy_(torch.randn_like(value) * 0.1)
    return model.eval()


def official_layout(state: dict, prefix: str = "", nesting: str | None = "net", counters: bool = True):
    """emanet's state dict in the official checkpoint's layout, built key by key by the mapping."""
    renamed = {
        prefix + official.to_official(k): v.clone()
        for k, v in state.items()
        if counters or not k.endswith("num_batches_tracked")
    }
    return {nesting: renamed, "step": 30000} if nesting else renamed


def test_the_mapping_covers_the_released_models_keys_and_shapes():
    """The paper's ema512 (ResNet-101, 21 classes), renamed: the official checkpoint's 659 entries with the
    shapes of its published description, and the same parameter count."""
    cfg = resolve(PARAMS, "paper", [], "ema512")
    with torch.device("meta"):
        model = build_model(dataclasses.replace(cfg.model, pretrained=None), 21)
    state = model.state_dict()
    names = {official.to_official(k): k for k in state}
    assert len(state) == 659 and None not in names and len(names) == 659
    assert all(official.to_emanet(o) == k for o, k in names.items())
    shapes = {o: tuple(state[k].shape) for o, k in names.items()}
    assert shapes["extractor.0.0.weight"] == (64, 3, 3, 3)
    assert shapes["extractor.0.3.weight"] == (64, 64, 3, 3)
    assert shapes["extractor.0.6.weight"] == (128, 64, 3, 3)
    assert shapes["extractor.0.1.running_var"] == shapes["extractor.0.4.weight"] == (64,)
    assert shapes["extractor.1.weight"] == (128,)
    assert shapes["extractor.4.0.downsample.0.weight"] == (256, 128, 1, 1)
    assert "extractor.6.22.conv2.weight" in shapes and "extractor.6.23.conv2.weight" not in shapes
    assert shapes["fc0.conv.weight"] == (512, 2048, 3, 3) and shapes["fc0.bn.num_batches_tracked"] == ()
    assert shapes["emau.mu"] == (1, 512, 64)
    assert shapes["emau.conv1.weight"] == (512, 512, 1, 1) and shapes["emau.conv1.bias"] == (512,)
    assert shapes["emau.conv2.0.weight"] == (512, 512, 1, 1) and shapes["emau.conv2.1.running_mean"] == (512,)
    assert shapes["fc1.0.conv.weight"] == (256, 512, 3, 3) and shapes["fc1.0.bn.bias"] == (256,)
    assert shapes["fc2.weight"] == (21, 256, 1, 1) and shapes["fc2.bias"] == (21,)
    counted = sum(
        v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert counted == 53_806_293


@pytest.mark.parametrize(
    "sets, prefix, nesting, counters",
    [
        (DEEP, "", "net", True),  # the released file as the authors' code saves it
        (DEEP, "module.", "net", False),  # someone's DDP copy, saved by an older torch
        ([], "module.", None, True),  # a bare DataParallel state dict
        ([], "", None, False),
        ([], "module.module.", "state_dict", True),
    ],
)
def test_an_official_checkpoint_imports_to_identical_tensors_and_predictions(tmp_path, sets, prefix, nesting, counters):
    cfg = config("ema512", *sets)
    original = trained_looking(cfg)
    source = tmp_path / "latest.pth"
    torch.save(official_layout(original.state_dict(), prefix, nesting, counters), source)
    run_dir = tmp_path / "runs" / "ema512"
    record = import_weights(cfg, run_dir, source)
    assert record["format"] == "official" and record["prefix"] == ("module." if prefix else "")
    assert record["nesting"] == ([nesting] if nesting else []) and record["num_batches_tracked"] is counters
    assert record["classes"] == 21 and record["extras"] == ({"step": 30000} if nesting else {})
    imported = torch.load(run_dir / "model.pt", weights_only=True)
    assert list(imported) == list(original.state_dict())
    for key, value in original.state_dict().items():
        if key.endswith("num_batches_tracked") and not counters:
            continue  # absent from the file: the model's own counter
        assert torch.equal(imported[key], value), key
    model = load_trained(cfg, run_dir, 21, torch.device("cpu"))
    image = torch.randn(3, 57, 71)
    with torch.no_grad():
        assert torch.equal(model(image[None]), original(image[None]))
    for scales, flip in ((None, False), ([0.75, 1.25], True)):
        assert torch.equal(predict(model, image, scales, flip), predict(original, image, scales, flip))
    info = json.loads((run_dir / "run.json").read_text())
    assert info["imported"]["sha256"] == record["sha256"]
    assert info["identity"]["training"]["digest"] == digest(training_identity(cfg))


def test_emanet_naming_with_a_wrapper_is_read_and_the_format_can_be_forced(tmp_path):
    cfg = config()
    state = trained_looking(cfg).state_dict()
    path = tmp_path / "ddp.pt"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    weights = read_foreign(path)
    assert weights.format == "emanet" and weights.nesting == ("model",) and weights.extras == {"epoch": 3}
    assert all(torch.equal(weights.state[k], v) for k, v in state.items())
    with pytest.raises(
        WeightLoadError, match="weights.pth: .*it uses the official EMANet naming.*read it with --format official"
    ):
        import_weights(cfg, tmp_path / "run", _saved(tmp_path, official_layout(state)), format="emanet")


def cli(command: str, out, data_root, *sets: str) -> list[str]:
    """`emanet COMMAND` on the tiny profile's ema512 with tracking as the environment says."""
    args = [
        command,
        "--experiment",
        "ema512",
        "--profile",
        "tiny",
        "--out",
        str(out),
        "--set",
        f"data.root={data_root}",
    ]
    for item in sets:
        args += ["--set", item]
    return args


def _saved(tmp_path, obj, name: str = "weights.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.mark.parametrize(
    "experiment, sets, cause",
    [
        ("aspp", [], "head aspp"),  # another head
        ("ema256", [], "head channels C 32"),  # the EMA head at another width
        ("ema512", DEEP, "stem deep, layer1 width 64"),  # another backbone
        ("ema512", ["model.ema.num_bases=16"], "bases K 16"),
    ],
)
def test_a_checkpoint_of_another_architecture_is_refused_in_a_few_lines_naming_the_cause(
    tmp_path, experiment, sets, cause
):
    source = _saved(
        tmp_path,
        official_layout(trained_looking(config(experiment, *sets)).state_dict())
        if experiment != "aspp"
        else {"net": trained_looking(config("aspp")).state_dict()},
    )
    with pytest.raises(WeightLoadError) as raised:
        import_weights(config("ema512"), tmp_path / "runs" / "ema512", source)
    message = str(raised.value)
    assert message.startswith(f"{source}: does not fit the model of experiment 'ema512'")
    assert len(message) < 900 and message.count("\n") <= 3, message
    assert f"cause: the checkpoint was made for {cause}" in message, message
    assert not (tmp_path / "runs").exists()  # nothing written for weights that do not fit


def test_every_whole_model_load_gives_the_short_error(tmp_path):
    """A run's model.pt of another configuration (evaluate, predict, train.init_from all load through
    load_model_weights), and a foreign file put there by hand, each explained in a few lines."""
    cfg = config()
    other = _saved(tmp_path, trained_looking(config("ema512", *DEEP)).state_dict(), "model.pt")
    with pytest.raises(WeightLoadError) as raised:
        load_model_weights(build_model(cfg.model, 21), other)
    assert len(str(raised.value)) < 900 and "cause: the checkpoint was made for stem deep" in str(raised.value)
    foreign = _saved(tmp_path, official_layout(trained_looking(cfg).state_dict()), "latest.pth")
    with pytest.raises(
        WeightLoadError,
        match=r"latest\.pth: expected a plain state dict.*'net' \(125 tensors\), "
        r"'step' \(int\); it uses the official EMANet naming.*emanet import-weights",
    ):
        load_model_weights(build_model(cfg.model, 21), foreign)
    prefixed = _saved(tmp_path, {f"module.{k}": v for k, v in trained_looking(cfg).state_dict().items()}, "ddp.pt")
    with pytest.raises(
        WeightLoadError, match=r"(?s)0 of the model's 125 entries match.*DDP's `module.` prefix"
    ) as raised:
        load_model_weights(build_model(cfg.model, 21), prefixed)
    assert len(str(raised.value)) < 900


@pytest.mark.parametrize(
    "content, message",
    [
        (b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>", "is a web page"),
        (
            {"epoch": 3, "optimizer": {"lr": 0.1}},
            r"holds no state dict: found a dict with 'epoch' \(int\), 'optimizer' \(dict\)",
        ),
        (
            {"decode_head.conv_seg.weight": torch.zeros(2), "backbone.stem.0.weight": torch.zeros(2)},
            "looks like an mmsegmentation checkpoint",
        ),
        (
            {"conv1.weight": torch.zeros(2), "layer1.0.conv1.weight": torch.zeros(2), "fc.weight": torch.zeros(2)},
            "looks like a backbone alone",
        ),
        ({"backbone.conv1.weight": torch.zeros(2)}, r"has no segmentation classifier \(head.classifier.weight\)"),
        (b"PK\x03\x04 truncated", "not a readable weights-only PyTorch checkpoint"),
    ],
)
def test_files_that_are_not_a_whole_model_are_named_with_what_they_look_like(tmp_path, content, message):
    path = tmp_path / "download.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(WeightLoadError, match=f"download.pth: .*{message}") as raised:
        read_foreign(path)
    assert len(str(raised.value)) < 600


def test_the_released_model_is_fetched_by_hand_and_pinned_on_first_sight(tmp_path, capsys):
    from emanet.cli import main
    from emanet.data.archives.download import fetch_named

    folder = tmp_path / "weights"
    with pytest.raises(
        FetchError,
        match=r"(?s)emanet-voc-official\.pth: .*Google Drive.*XiaLiPKU/EMANet.*save it as "
        r"emanet-voc-official\.pth in sources\.weights_dir",
    ):
        fetch_named("emanet-voc-official", folder, progress=False)
    folder.mkdir(exist_ok=True)
    page = folder / "emanet-voc-official.pth"
    page.write_text("<html><body>Google Drive can't scan this file for viruses.</body></html>")
    assert main(["download", "emanet-voc-official", "--raw-dir", str(folder), "--quiet"]) == 2
    assert f"{page}: is a web page" in capsys.readouterr().err
    assert not (folder / "pinned-checksums.json").exists()
    torch.save(official_layout(trained_looking(config()).state_dict()), page)
    assert fetch_named("emanet-voc-official", folder, progress=False) == [page]
    pins = json.loads((folder / "pinned-checksums.json").read_text())
    assert pins["emanet-voc-official.pth"]["size"] == page.stat().st_size
    page.write_bytes(page.read_bytes() + b"x")  # changed after pinning: refused
    with pytest.raises(FetchError, match="sha256 mismatch|size mismatch"):
        fetch_named("emanet-voc-official", folder, progress=False)


def test_an_imported_run_is_evaluated_reported_and_kept_from_training(tmp_path, prepared_root, capsys):
    """import -> evaluate on the tiny profile; the report's cell says imported; train refuses the folder."""
    from emanet.cli import main
    from emanet.engine.evaluate import evaluate
    from emanet.report.tables import _metric_cell

    cfg = config("ema512", f"data.root={prepared_root}")
    original = trained_looking(cfg)
    source = _saved(tmp_path, official_layout(original.state_dict(), "module."), "latest.pth")
    run_dir = tmp_path / "runs" / "ema512"
    import_weights(cfg, run_dir, source)
    metrics = evaluate(cfg, run_dir, ["ss"])["ss"]
    assert json.loads((run_dir / "metrics.json").read_text())["miou"] == metrics["miou"]
    assert metrics["evaluation_identity"] == digest(evaluation_identity(cfg, ["ss"])) and metrics["images"] > 0
    cell = _metric_cell(run_dir, "ss")
    assert cell.text == f"{100 * metrics['miou']:.2f} (imported)" and cell.ours == pytest.approx(100 * metrics["miou"])
    train = [
        "train",
        "--experiment",
        "ema512",
        "--profile",
        "tiny",
        "--out",
        str(tmp_path),
        "--set",
        f"data.root={prepared_root}",
        "--set",
        "tracking.enabled=false",
    ]
    assert main(train) == 2
    error = capsys.readouterr().err
    assert f"{run_dir} holds weights imported from {source.resolve()}" in error and "--replace-changed" in error
    assert torch.equal(
        torch.load(run_dir / "model.pt", weights_only=True)["head.block.bases"],
        original.state_dict()["head.block.bases"],
    )


def test_a_classifier_for_another_number_of_classes_is_refused_before_anything_is_written(tmp_path, prepared_root):
    """evaluate would refuse the run afterwards (its dataset has 21 classes): import refuses it first, naming
    the file, both counts and the dataset, and leaves the run folder empty."""
    cfg = config("ema512", f"data.root={prepared_root}")
    source = _saved(tmp_path, official_layout(trained_looking(cfg, num_classes=5).state_dict()), "five.pth")
    run_dir = tmp_path / "runs" / "ema512"
    with pytest.raises(
        WeightLoadError,
        match=r"five.pth: its classifier predicts 5 classes but the experiment's "
        r"dataset 'voc' .* has 21",
    ):
        import_weights(cfg, run_dir, source)
    assert not run_dir.exists()
    unprepared = config("ema512", f"data.root={tmp_path / 'nothing'}")  # nothing to check against: accepted
    import_weights(unprepared, tmp_path / "other" / "ema512", source)


@pytest.mark.slow
def test_the_cli_imports_tracks_in_mlflow_and_replace_changed_sets_the_import_aside(tmp_path, prepared_root):
    """As users run it: import-weights and evaluate log the run to MLflow tagged imported (the report from
    MLflow alone says so too); `train --replace-changed` keeps the imported run aside and trains."""
    from mlflow import MlflowClient

    from emanet.report.tables import mlflow_cell
    from emanet.tracking import metrics_from_mlflow

    out, uri = tmp_path / "results", f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri}
    sets = ["train.iterations=2", "train.checkpoint_interval=1"]
    cfg = config("ema512", f"data.root={prepared_root}", *sets)
    source = _saved(tmp_path, official_layout(trained_looking(cfg).state_dict(), "module."), "latest.pth")
    proc = emanet([*cli("import-weights", out, prepared_root, *sets), str(source)], env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "official naming, nested under 'net', 'module.' prefix removed" in proc.stdout
    run_dir = out / "runs" / "ema512"
    proc = emanet(cli("evaluate", out, prepared_root, *sets), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    info = json.loads((run_dir / "run.json").read_text())
    run = MlflowClient(uri).get_run(info["mlflow_run_id"])
    assert run.data.tags["imported"] == "true" and run.data.tags["imported_sha256"] == info["imported"]["sha256"]
    assert run.data.metrics["voc_val/ss/miou"] == pytest.approx(metrics["miou"])
    assert mlflow_cell(metrics_from_mlflow(uri, ["emanet/tiny/voc"]), "ema512", "ss").text.endswith("(imported)")

    train = cli("train", out, prepared_root, *sets)
    proc = emanet(train, env=env)
    assert proc.returncode == 2 and "holds weights imported from" in proc.stderr and "Traceback" not in proc.stderr
    proc = emanet([*train, "--replace-changed"], env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    aside = [p for p in out.joinpath("runs").iterdir() if p.name.startswith("ema512.replaced-")]
    assert len(aside) == 1 and f"imported-{info['imported']['sha256'][:12]}" in aside[0].name
    assert json.loads((aside[0] / "run.json").read_text())["imported"] == info["imported"]
    assert "imported" not in json.loads((run_dir / "run.json").read_text())


def test_import_refuses_a_folder_holding_another_run_unless_told_to_set_it_aside(tmp_path, capsys):
    from emanet.cli import main

    cfg = config()
    run_dir = tmp_path / "runs" / "ema512"
    first = _saved(tmp_path, official_layout(trained_looking(cfg, seed=1).state_dict()), "first.pth")
    second = _saved(tmp_path, official_layout(trained_looking(cfg, seed=2).state_dict()), "second.pth")
    import_weights(cfg, run_dir, first)
    import_weights(cfg, run_dir, first)  # the same file again: a no-op
    with pytest.raises(ConfigError, match=r"holds other weights, imported from .*first\.pth: pass --replace-changed"):
        import_weights(cfg, run_dir, second)
    args = [
        "import-weights",
        str(second),
        "--experiment",
        "ema512",
        "--profile",
        "tiny",
        "--out",
        str(tmp_path),
        "--set",
        "tracking.enabled=false",
    ]
    assert main(args) == 2
    assert "pass --replace-changed" in capsys.readouterr().err
    assert main([*args, "--replace-changed"]) == 0
    assert json.loads((run_dir / "run.json").read_text())["imported"]["source"] == str(second.resolve())
    assert len([p for p in run_dir.parent.iterdir() if p.name.startswith("ema512.replaced-")]) == 1
    assert os.path.exists(run_dir / "model.pt")


def test_the_misfit_counts_add_up_to_the_models_entries():
    """matched + missing + of another shape + allowed-absent counters = the model's entries, so a user can
    account for every one (the counters an older checkpoint lacks are said, not silently subtracted)."""
    from emanet.models.weights import compare

    ema = build_model(config("ema512").model, 21).state_dict()
    fcn = build_model(config("fcn").model, 21).state_dict()
    without_counters = {k: v for k, v in ema.items() if not k.endswith("num_batches_tracked")}
    report = compare(without_counters, fcn, optional_counters=True)
    counters = sum(k.endswith("num_batches_tracked") for k in fcn)
    assert report.absent_counters == counters > 0
    assert report.matched + len(report.missing) + len(report.conflicts) + report.absent_counters == len(fcn)
    assert f"{counters} BatchNorm counters (num_batches_tracked) absent" in report.summary()
    assert compare(ema, ema).absent_counters == 0 and "counters" not in compare(ema, ema).summary()
