"""Table 2's recipe: COCO relabelled to VOC, the label-less VOC test split, fine-tuning from another run,
and the evaluation-server round trip (package, score, record)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import zipfile

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from emanet import plan
from emanet.config import ConfigError, load_params
from emanet.data.archives.transfer import FetchError, RemoteFile, fetch_file, file_digests
from emanet.data.classes import COCO_VOC_IDS, IGNORE, coco_voc_lut, palette_png
from emanet.data.convert.prepare import prepare
from emanet.data.files import DataError, read_id_list, read_index_png
from emanet.data.layout import read_meta
from emanet.data.loading.dataset import SegmentationDataset
from emanet.data.synthetic.archives import SERVER_DIR
from emanet.engine import submission
from emanet.engine.metrics import scores
from emanet.report.tables import build_tables
from tests.helpers.runs import ROOT, emanet, run_args, weights

SHORT = ("train.iterations=4", "train.batch_size=4", "train.checkpoint_interval=2", "train.log_interval=2")


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


# --- data ------------------------------------------------------------------------------------------


def test_coco_voc_lut_maps_the_20_voc_categories_and_nothing_else():
    lut = coco_voc_lut()
    names = {"person": 15, "airplane": 1, "tv": 20, "couch": 18, "motorcycle": 14, "dining table": 11}
    from emanet.data.classes import COCOSTUFF_LABELS

    for name, voc_id in names.items():
        assert lut[COCOSTUFF_LABELS.index(name)] == voc_id  # stuffthingmaps store labels.txt id - 1
    assert lut[COCOSTUFF_LABELS.index("truck")] == 0 and lut[COCOSTUFF_LABELS.index("sky-other")] == 0
    assert lut[IGNORE] == IGNORE
    assert sorted(lut[[k - 1 for k in COCO_VOC_IDS]]) == list(range(1, 21))
    assert np.count_nonzero((lut > 0) & (lut < IGNORE)) == 20


def test_prepare_coco_voc_relabels_and_drops_images_without_voc_objects(tmp_path, raw_dir, synth_dir):
    counts = json.loads((synth_dir / "manifest.json").read_text())["counts"]["coco_voc"]
    root = prepare("coco_voc", raw_dir, tmp_path / "prepared", counts, progress=False)
    meta = read_meta(root)
    assert meta["num_classes"] == 21 and meta["classes"][15] == "person"
    train, val = read_id_list(root / "splits/train.txt"), read_id_list(root / "splits/val.txt")
    assert len(val) == counts["val"]  # val is never filtered
    removed = meta["filtered"]["train"]["removed"]
    assert removed > 0 and len(train) == counts["train"] - removed
    maps = _stuffthingmaps(raw_dir)
    for image_id, raw in maps.items():
        expected = coco_voc_lut()[raw]
        kept = np.count_nonzero((expected > 0) & (expected < IGNORE)) > 1000
        assert (image_id in train) == kept == (root / "images" / f"{image_id}.jpg").exists(), image_id
        if kept:
            assert np.array_equal(read_index_png(root / "labels" / f"{image_id}.png"), expected)


def _stuffthingmaps(raw_dir) -> dict[str, np.ndarray]:
    """The synthetic train2017 label maps, as stored in the zip (labels.txt id - 1, 255 unlabeled)."""
    with zipfile.ZipFile(raw_dir / "stuffthingmaps_trainval2017.zip") as zf:
        return {
            n.split("/")[1][:-4]: np.array(Image.open(io.BytesIO(zf.read(n))))
            for n in zf.namelist()
            if n.startswith("train2017/")
        }


def test_prepare_voc_test_keeps_images_without_labels(tmp_path, raw_dir):
    root = prepare("voc_test", raw_dir, tmp_path / "prepared", None, progress=False)
    meta = read_meta(root)
    assert meta["unlabelled_splits"] == ["test"] and meta["label_checksum"] is None and meta["image_checksum"]
    ids = read_id_list(root / "splits/test.txt")
    assert ids and not any((root / "labels").iterdir())
    with tarfile.open(raw_dir / "VOC2012test.tar") as tar:  # the detection-only test images are left out
        jpegs = [m for m in tar.getnames() if m.endswith(".jpg")]
    assert len(jpegs) > len(ids) == len(list((root / "images").iterdir()))
    dataset = SegmentationDataset(root, "test")
    assert not dataset.labelled and dataset.load_image(0).shape[0] == 3
    with pytest.raises(DataError, match="has no labels"):
        dataset.load(0)


def test_voc_test_without_the_archive_says_how_to_get_it(tmp_path):
    from emanet.data.convert.voc import convert_test

    with pytest.raises(DataError, match="login"):
        convert_test(tmp_path)


def test_a_login_gated_file_names_the_way_to_get_it_and_is_pinned_when_placed_by_hand(tmp_path):
    entry = RemoteFile("gated.tar", ((tmp_path / "nowhere.tar").as_uri(),), access="log in at the server first")
    with pytest.raises(FetchError, match="log in at the server first"):
        fetch_file(entry, tmp_path / "raw", progress=False)
    (tmp_path / "raw" / "gated.tar").write_bytes(b"placed by hand")
    fetch_file(entry, tmp_path / "raw", progress=False)
    pins = json.loads((tmp_path / "raw/pinned-checksums.json").read_text())
    assert pins["gated.tar"]["sha256"] == file_digests(tmp_path / "raw/gated.tar", ["sha256"])["sha256"]
    (tmp_path / "raw" / "gated.tar").write_bytes(b"changed later")
    with pytest.raises(FetchError, match="mismatch"):
        fetch_file(entry, tmp_path / "raw", progress=False)


# --- configuration -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p["experiments"]["fcn"].update(train={"init_from": "ema512"}), "belongs in finetunes"),
        (lambda p: p["finetunes"]["coco_r101_trainaug"]["train"].pop("init_from"), "init_from"),
        (lambda p: p["finetunes"]["coco_r101_trainaug"]["train"].update(init_from="nope"), "not an experiment"),
        (lambda p: p["finetunes"]["coco_r101_trainaug"]["train"].update(init_from="coco_r101_trainval"), "cycle"),
        (lambda p: p["finetunes"]["coco_r101_trainaug"].pop("eval"), "finetunes.coco_r101_trainaug.eval.dataset"),
        (lambda p: p["experiments"]["fcn"].update(eval={"dataset": "voc_test"}), "is for finetunes"),
        (lambda p: p["finetunes"].update(fcn={}), "both in experiments and in finetunes"),
    ],
)
def test_bad_finetunes_are_refused_with_the_key_named(change, message):
    params = load_params(ROOT / "params.yaml")
    change(params)
    with pytest.raises(ConfigError, match=message):
        plan.runs(params)


def test_table2_runs_form_the_papers_chain():
    params = load_params(ROOT / "params.yaml")
    chain, run = [], "coco_r101_trainval"
    while run:
        chain.append(run)
        run = plan.parent(params, run)
    assert chain == ["coco_r101_trainval", "coco_r101_trainaug", "coco_r101"]
    configs = plan.configs(params, "paper")
    assert [configs[r].data.dataset for r in reversed(chain)] == ["coco_voc", "voc", "voc"]
    assert [configs[r].data.train_split for r in reversed(chain)] == ["train", "trainaug", "trainval"]
    assert all(configs[r].train.iterations == 30000 for r in chain)
    final = configs["coco_r101_trainval"]
    assert (final.eval.dataset, final.eval.split, final.model.backbone) == ("voc_test", "test", "resnet101")
    assert configs["coco_r152_trainval"].model.backbone == "resnet152"
    assert "ms_flip" in plan.protocols(params, "coco_r101_trainval")


# --- the evaluation server's format --------------------------------------------------------------------


def _labels(tmp_path, ids, seed=0):
    """Ground truth (with an ignored pixel) in labels/, and a perfect prediction of it in preds/."""
    rng = np.random.default_rng(seed)
    for folder in ("labels", "preds"):
        (tmp_path / folder).mkdir(exist_ok=True)
    for i in ids:
        label = rng.integers(0, 21, size=(9, 11)).astype(np.uint8)
        (tmp_path / "preds" / f"{i}.png").write_bytes(palette_png(label))
        label[0, 0] = IGNORE
        (tmp_path / "labels" / f"{i}.png").write_bytes(palette_png(label))
    return tmp_path / "labels"


def test_a_package_of_the_ground_truth_scores_100_and_has_the_servers_layout(tmp_path):
    ids = ["2008_000001", "2008_000002", "2009_000003"]
    labels = _labels(tmp_path, ids)
    tarball = submission.package(tmp_path / "preds", ids, tmp_path / "sub.tar.gz")
    with tarfile.open(tarball) as tar:
        assert sorted(tar.getnames()) == [f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png" for i in ids]
    matrix = submission.score(tarball, labels, ids, 21)
    assert scores(matrix.numpy(), [str(k) for k in range(21)])["miou"] == pytest.approx(1.0)
    again = submission.package(tmp_path / "preds", ids, tmp_path / "again.tar.gz")
    assert again.read_bytes() == tarball.read_bytes()  # reproducible: same predictions, same bytes


def test_a_package_the_server_would_refuse_is_an_error_naming_it(tmp_path):
    ids = ["a", "b"]
    labels = _labels(tmp_path, ids)
    with pytest.raises(DataError, match="1 predictions are missing: c"):
        submission.package(tmp_path / "preds", [*ids, "c"], tmp_path / "x.tar.gz")
    tarball = submission.package(tmp_path / "preds", ids, tmp_path / "sub.tar.gz")
    with pytest.raises(DataError, match="1 test images lack"):
        submission.score(tarball, labels, [*ids, "c"], 21)
    with pytest.raises(DataError, match="1 unexpected files"):
        submission.score(tarball, labels, ids[:1], 21)
    other = tmp_path / "other"
    other.mkdir()
    for i in ids:
        (other / f"{i}.png").write_bytes(palette_png(np.zeros((5, 5), dtype=np.uint8)))
    with pytest.raises(DataError, match="is 11x9, the image is 5x5"):
        submission.score(tarball, other, ids, 21)
    (tmp_path / "broken.tar.gz").write_bytes(tarball.read_bytes()[:40])
    with pytest.raises(DataError, match="broken.tar.gz"):
        submission.score(tmp_path / "broken.tar.gz", labels, ids, 21)


# --- fine-tuning and the test set, through the CLI -------------------------------------------------------


@pytest.fixture
def test_setup(tmp_path, prepared_root, raw_dir, synth_dir):
    """params with ema512 -> ema512_ft (trainval, evaluated on VOC test), and voc_test prepared."""
    prepare("voc_test", raw_dir, prepared_root, None, progress=False)
    params = load_params(ROOT / "params.yaml")
    params["finetunes"]["ema512_ft"] = {
        "data": {"dataset": "voc", "train_split": "trainval"},
        "eval": {"dataset": "voc_test", "split": "test"},
        "train": {"init_from": "ema512"},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path, synth_dir / SERVER_DIR / "voc_test"


def _args(command, tmp_path, prepared_root, params, *sets, experiment="ema512_ft"):
    """No stand-in for the server unless ``sets`` name one (the repository's synthetic labels are not here)."""
    return [
        *run_args(
            command, tmp_path / "out", prepared_root, *SHORT, "eval.server_labels=null", *sets, experiment=experiment
        ),
        "--params",
        str(params),
    ]


@pytest.mark.slow
def test_finetune_starts_from_its_parent_and_notices_a_retrained_parent(tmp_path, prepared_root, test_setup):
    params, _ = test_setup
    _ok(emanet(_args("train", tmp_path, prepared_root, params, experiment="ema512")))
    parent = weights(tmp_path / "out/runs/ema512")
    # lr 0: the parameters stay what the parent left (BN statistics and EMA bases still move in train mode)
    _ok(emanet(_args("train", tmp_path, prepared_root, params, "train.lr=0.0")))
    child = weights(tmp_path / "out/runs/ema512_ft")
    for key in ("backbone.conv1.weight", "head.classifier.weight", "head.block.conv_in.weight"):
        assert torch.equal(parent[key], child[key]), key
    assert not torch.equal(parent["head.block.bases"], child["head.block.bases"])  # moved: it was trained on
    info = json.loads((tmp_path / "out/runs/ema512_ft/run.json").read_text())
    assert info["init_from"] == "ema512"
    assert info["identity"]["init_sha256"] == file_digests(tmp_path / "out/runs/ema512/model.pt", ["sha256"])["sha256"]

    _ok(
        emanet(
            _args("train", tmp_path, prepared_root, params, "model.dropout=0.2", experiment="ema512")
            + ["--replace-changed"]
        )
    )
    refused = emanet(_args("train", tmp_path, prepared_root, params, "train.lr=0.0"))
    assert refused.returncode == 2 and "started from other initial weights" in refused.stderr
    moved = _ok(emanet(_args("train", tmp_path, prepared_root, params, "train.lr=0.0") + ["--replace-changed"]))
    assert "it started from other initial weights" in moved.stdout
    assert list((tmp_path / "out/runs").glob("ema512_ft.replaced-*"))


@pytest.mark.slow
def test_test_split_is_packaged_scored_by_the_stand_in_or_recorded_from_the_server(tmp_path, prepared_root, test_setup):
    params, server_labels = test_setup
    _ok(emanet(_args("train", tmp_path, prepared_root, params, experiment="ema512")))
    _ok(emanet(_args("train", tmp_path, prepared_root, params)))
    run = tmp_path / "out/runs/ema512_ft"

    # no ground truth (the real test set): a package, and the report says what to do with it
    out = _ok(emanet(_args("evaluate", tmp_path, prepared_root, params) + ["--multi-scale", "--flip"])).stdout
    assert "no public labels" in out and "host.robots.ox.ac.uk" in out
    package = json.loads((run / "submission_ms_flip.json").read_text())
    assert package["miou"] is None and not (run / "metrics_ms_flip.json").exists()
    table_params = load_params(params)
    table_params["tables"]["table2"]["rows"].append({"label": "ours", "experiment": "ema512_ft"})
    cell = {t.name: t for t in build_tables(table_params, tmp_path / "out")}["table2"].rows[-1].cells["test"]
    assert cell.text == "awaiting server" and "submission record" in cell.missing

    # the server's answer, recorded
    record = ["submission", *_args("record", tmp_path, prepared_root, params)]
    bad = emanet([*record, "--miou", "187"])
    assert bad.returncode == 2 and "percentage" in bad.stderr
    (tmp_path / "classes.csv").write_text("class,iou\naeroplane,90.1\nbicycle,x\n")
    bad = emanet([*record, "--miou", "87.7", "--per-class", str(tmp_path / "classes.csv")])
    assert bad.returncode == 2 and "classes.csv: expected 'class,iou' rows" in bad.stderr
    (tmp_path / "classes.csv").write_text("class,iou\naeroplane,90.1\nbicycle,41.5\n")
    _ok(
        emanet(
            [
                *record,
                "--miou",
                "87.7",
                "--url",
                "http://host.robots.ox.ac.uk:8080/anonymous/X.html",
                "--per-class",
                str(tmp_path / "classes.csv"),
            ]
        )
    )
    recorded = json.loads((run / "metrics_ms_flip.json").read_text())
    assert recorded["miou"] == pytest.approx(0.877) and "evaluation server" in recorded["scored_by"]
    assert recorded["per_class"] == pytest.approx({"aeroplane": 0.901, "bicycle": 0.415})
    tables = {t.name: t for t in build_tables(table_params, tmp_path / "out")}
    assert tables["table2"].rows[-1].cells["test"].text == "87.70"

    # the tiny profile's stand-in scores the package as the server would; it equals scoring the PNGs directly
    _ok(emanet(_args("evaluate", tmp_path, prepared_root, params, f"eval.server_labels={server_labels}")))
    scored = json.loads((run / "metrics.json").read_text())
    ids = read_id_list(prepared_root / "voc_test/splits/test.txt")
    direct = submission.score(run / "submission_ss.tar.gz", server_labels, ids, 21)
    assert scored["confusion_matrix"] == direct.tolist() and 0.0 <= scored["miou"] <= 1.0
    # every labelled test pixel is scored (what a 4 + 4-iteration model scores is training dynamics, not checked)
    labelled = sum(int((read_index_png(server_labels / f"{i}.png") != IGNORE).sum()) for i in ids)
    assert direct.sum().item() == labelled > 0
    with tarfile.open(run / "submission_ss.tar.gz") as tar:
        first = tar.extractfile(f"results/VOC2012/Segmentation/comp6_test_cls/{ids[0]}.png").read()
    assert Image.open(io.BytesIO(first)).mode == "P"
    assert read_index_png(server_labels / f"{ids[0]}.png").shape == np.array(Image.open(io.BytesIO(first))).shape
    # a recorded score of an earlier package (evaluated again since) is shown as stale, not as a result
    package["submission_sha256"] = "0" * 64
    (run / "submission_ms_flip.json").write_text(json.dumps(package))
    tables = {t.name: t for t in build_tables(table_params, tmp_path / "out")}
    assert tables["table2"].rows[-1].cells["test"].text == "stale"


def test_voc_and_voc_test_each_find_their_own_tree_whatever_was_extracted_first(tmp_path, raw_dir):
    """Both archives unpack to VOCdevkit/VOC2012: preparing VOC test first must not make VOC pick its tree."""
    prepare("voc_test", raw_dir, tmp_path / "prepared", None, progress=False)
    root = prepare("voc", raw_dir, tmp_path / "prepared", None, progress=False)
    assert read_meta(root)["counts"]["trainaug"] > 0
    merged = tmp_path / "merged"  # the common habit: the test tar unpacked over the trainval tree
    for archive in ("VOCtrainval_11-May-2012.tar", "VOC2012test.tar"):
        with tarfile.open(raw_dir / archive) as tar:
            tar.extractall(merged, filter="data")
    shutil.copy(raw_dir / "benchmark.tgz", merged / "benchmark.tgz")
    assert read_meta(prepare("voc_test", merged, tmp_path / "again", None, progress=False))["counts"]["test"]
    assert read_meta(prepare("voc", merged, tmp_path / "again", None, progress=False))["counts"]["val"]
