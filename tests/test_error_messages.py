"""Errors say what to do: the messages a reviewer found lacking a fix, or giving a harmful one."""

from __future__ import annotations

import pickle

import pytest
import torch

from emanet.cli import main
from emanet.data.convert import cocostuff, context
from emanet.data.files import DataError
from emanet.engine import checkpoint
from emanet.models.import_weights import read_foreign
from emanet.models.weights import WeightLoadError, read_model_weights, read_state_dict
from tests.conftest import ROOT


class _Custom:  # a pickled object a weights-only load refuses
    pass


@pytest.mark.parametrize(
    "content",
    [b"garbage bytes", b"", pickle.dumps(_Custom()), "torch-save-of-object"],
    ids=["garbage", "empty", "pickled-object", "torch-saved-object"],
)
@pytest.mark.parametrize("reader", [read_state_dict, read_model_weights, read_foreign, checkpoint.load])
def test_unreadable_checkpoints_never_advise_weights_only_false(tmp_path, content, reader):
    path = tmp_path / "weights.pth"
    if content == "torch-save-of-object":
        torch.save({"net": _Custom()}, path)
    else:
        path.write_bytes(content)
    with pytest.raises((WeightLoadError, checkpoint.CheckpointError)) as raised:
        reader(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and "weights_only=False" not in message
    assert "arbitrary code" not in message and ("download it again" in message or "delete" in message)


@pytest.mark.parametrize(
    "text", ["", "0: unlabeled\n1: person\n", "0: nothing\n" + "".join(f"{k}: x\n" for k in range(1, 183))]
)
def test_a_wrong_cocostuff_labels_txt_says_what_was_found_and_how_to_fix_it(tmp_path, text):
    (tmp_path / "labels.txt").write_text(text)
    with pytest.raises(DataError, match=r"labels.txt: .*found \d+.*emanet download"):
        cocostuff.class_names(tmp_path, "labels.txt")


def test_class_names_that_differ_name_the_first_one(tmp_path):
    from emanet.data.classes import COCOSTUFF_LABELS

    names = ["unlabeled", *COCOSTUFF_LABELS]
    names[5] = "truck?"
    (tmp_path / "labels.txt").write_text("".join(f"{k}: {n}\n" for k, n in enumerate(names)))
    with pytest.raises(DataError, match=r"first at 5: 'truck\?', expected '.*'.*emanet download"):
        cocostuff.class_names(tmp_path, "labels.txt")


def test_context_lists_that_do_not_match_the_annotations_say_where_to_look(tmp_path, raw_dir):
    from emanet.data.archives import catalog
    from emanet.data.convert.sources import extracted

    voc = extracted(raw_dir, catalog.VOC2010.name)
    train = next(voc.rglob("ImageSets/Main/train.txt"))
    train.write_text("")
    with pytest.raises(DataError, match=r"do not coincide .*re-extract or re-download"):
        context.convert(raw_dir)


@pytest.mark.parametrize(
    "sets, named",
    [
        (["model.ema.bogus_key=1"], "with --set model.ema.bogus_key=1: unknown key"),
        (["train.iterations=many"], "with --set train.iterations=many: "),
        ([], ": unknown experiment 'nope'"),
    ],
)
def test_a_params_error_names_the_params_file_and_the_overrides(tmp_path, capsys, sets, named):
    args = [
        "train",
        "--profile",
        "tiny",
        "--out",
        str(tmp_path),
        "--params",
        str(ROOT / "params.yaml"),
        "--experiment",
        "nope" if not sets else "ema512",
    ]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 2
    error = capsys.readouterr().err
    line = next(line for line in error.splitlines() if line.startswith("emanet: error: "))
    assert line.startswith(f"emanet: error: {ROOT / 'params.yaml'}") and named in line
    assert "Traceback" not in error


def test_a_run_folder_error_is_not_blamed_on_the_params_file(tmp_path, capsys):
    """Only errors in the parameters' content get the file's name: a refused run folder does not."""
    from emanet.config import ConfigError, ParamsError

    assert issubclass(ParamsError, ConfigError)
    from emanet.config import load_params, resolve
    from emanet.models import build_model

    run = tmp_path / "runs" / "ema512"
    run.mkdir(parents=True)
    (run / "model.pt").write_bytes(b"x")  # a run folder of unknown origin: import must refuse it
    cfg = resolve(load_params(ROOT / "params.yaml"), "tiny", experiment="ema512")
    source = tmp_path / "weights.pth"
    torch.save(build_model(cfg.model, 21).state_dict(), source)
    args = [
        "import-weights",
        str(source),
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
    line = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("emanet: error: "))
    assert "holds a model.pt of unknown origin" in line and "params.yaml" not in line
