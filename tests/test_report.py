"""Tables from run folders (ours beside the paper's), the schema check, and the rendered report."""

from __future__ import annotations

import ast
import copy
import html as htmllib
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from emanet import plan
from emanet.bench import complexity as bench
from emanet.config import ConfigError, load_params
from emanet.io import atomic_write_json
from emanet.report import build_report, figures
from emanet.report.figures import png_text
from emanet.report.tables import build_tables, to_html, to_latex, to_markdown
from emanet.runs.folder import SAMPLES
from tests.helpers.runs import ROOT


def _fake_run(results, experiment, protocols):
    run = results / "runs" / experiment
    atomic_write_json(
        run / "run.json", {"mlflow_run_id": f"id-{experiment}", "identity": {"training": {"digest": "abc"}}}
    )
    for protocol, miou in protocols.items():
        name = "metrics.json" if protocol == "ss" else f"metrics_{protocol}.json"
        atomic_write_json(
            run / name, {"miou": miou, "per_class": {"background": miou, "person": None}, "protocol": protocol}
        )
    (run / "train_log.csv").write_text("iteration,loss,lr,images_per_s,elapsed_s\n10,1.0,0.01,5,1\n20,0.5,0.009,5,2\n")


@pytest.fixture
def params(root):
    return load_params(root / "params.yaml")


def test_cells_hold_ours_the_papers_and_the_difference(tmp_path, params):
    _fake_run(tmp_path, "ema512", {"ss": 0.8105, "ms_flip": 0.82})
    atomic_write_json(tmp_path / "bench/complexity.json", bench.complexity())
    table1 = {t.name: t for t in build_tables(params, tmp_path)}["table1"]
    ema = next(r for r in table1.rows if r.label == "EMANet (512)")
    assert ema.cells["ss"].text == "81.05" and ema.cells["ss"].paper == 80.05
    assert ema.cells["ss"].diff == pytest.approx(1.0)
    assert ema.cells["ss"].mlflow_run == "id-ema512"
    assert ema.cells["params"].text == "+10.00M" and ema.cells["flops"].text == "+43.1G"
    assert ema.cells["flops"].diff_text == "-0.1%"  # costs: percent of the paper's value
    fcn = next(r for r in table1.rows if r.label.startswith("FCN"))
    assert fcn.cells["ss"].text == "" and fcn.cells["ss"].missing.endswith("metrics.json not found")
    markdown = to_markdown(table1)
    assert "| EMANet (512) | 81.05 / 80.05 [R] (+1.00)" in markdown
    assert "missing / n/p" in markdown and "not reimplemented" in markdown
    assert r"\begin{tabular}" in to_latex(table1) and r"81.05 & 80.05 [R]" in to_latex(table1)
    assert 'href="../runs/ema512"' in to_html(table1) and "MLflow run id-ema512" in to_html(table1)


@pytest.fixture(scope="module")
def complexity():
    return bench.complexity()


def _fake_results(results, params, complexity):
    for name in plan.experiments(params):
        _fake_run(results, name, {p: 0.5 for p in plan.protocols(params, name)})
    atomic_write_json(results / "bench/complexity.json", complexity)


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory, complexity):
    results = tmp_path_factory.mktemp("tiny")
    params = load_params(ROOT / "params.yaml")
    _fake_results(results, params, complexity)
    build_report(params, "tiny", results)
    return results / "report"


def test_report_writes_every_table_and_figure(tiny_report, params):
    html = (tiny_report / "report.html").read_text()
    assert "NOT comparable" in html and html.count("<table>") == len(params["tables"])
    for name in params["tables"]:
        assert (tiny_report / f"{name}.md").exists() and (tiny_report / f"{name}.tex").exists()
    figures_made = {p.name for p in (tiny_report / "figures").iterdir()}
    assert {"fig3.png", "fig4.png", "training_table1.png", "training_fig3.png", "per_class.png"} <= figures_made
    numbers = json.loads((tiny_report / "report.json").read_text())
    assert numbers["profile"] == "tiny" and len(numbers["tables"]) == len(params["tables"])


def test_every_table_file_and_figure_of_synthetic_data_carries_the_mark(tiny_report, params):
    mark = "SYNTHETIC DATA (tiny profile)"
    for name in params["tables"]:
        assert (tiny_report / f"{name}.md").read_text().startswith(f"> **{mark}")
        tex = (tiny_report / f"{name}.tex").read_text()
        assert tex.startswith(f"% {mark}") and rf"\caption{{\textbf{{{mark}" in tex
    pngs = sorted((tiny_report / "figures").glob("*.png"))
    assert len(pngs) >= len(params["tables"])
    for png in pngs:
        text = png_text(png)
        assert text["Warning"].startswith(mark) and "resnet_tiny" in text["Description"], png.name


def test_the_paper_profile_carries_no_mark(tmp_path, params, complexity):
    _fake_results(tmp_path, params, complexity)
    stale = tmp_path / "report/figures/training_curves.png"  # an earlier version's unmarked figure
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    page = build_report(params, "paper", tmp_path).read_text()
    assert "NOT comparable" not in page and "SYNTHETIC" not in page and not stale.exists()
    for path in (tmp_path / "report").glob("*.*"):
        if path.suffix in (".md", ".tex"):
            assert "SYNTHETIC" not in path.read_text(), path.name
    for png in (tmp_path / "report/figures").glob("*.png"):
        assert "Warning" not in png_text(png) and "profile paper" in png_text(png)["Description"], png.name


def test_captions_state_this_reports_setting_beside_the_papers(tiny_report):
    table1 = (tiny_report / "table1.md").read_text()
    title = next(line for line in table1.splitlines() if line.startswith("### "))
    assert "ResNet-101" not in title and "513" not in title
    assert "*Paper: PASCAL VOC 2012 val; ResNet-101, OS 8; costs at 513x513.*" in table1
    assert re.search(
        r"\*This report: resnet_tiny \(torchvision stem, width 16\), .*OS 8, crop 65, "
        r"100 iterations x batch 8, .*profile tiny \(synthetic images\)",
        table1,
    )
    assert "head C=32 (EMANet (256))" in table1  # a part that differs between rows names its rows
    assert "*Costs: resnet101 (deep stem) at 513x513, OS 8" in table1
    fig3 = (tiny_report / "fig3.md").read_text()
    assert "train OS 16 / test OS 8" in fig3.split("This report:")[1]


def test_cost_cells_compare_with_the_paper_and_memory_is_explained(tiny_report):
    table1 = (tiny_report / "table1.md").read_text()
    assert "| DeeplabV3 |" in table1 and "+66.0M / +66.0M [R] (0.0%)" in table1
    assert "2.603G / 2.603G [R] (0.0%)" in table1
    ema = next(line for line in table1.splitlines() if line.startswith("| EMANet (512) |"))
    assert "+41.3M / +22.1M [R] (+86.7%)" in ema
    assert "Its EMANet rows (+22.1M, +12.3M) are the fp32 values newly allocated" in table1


def _notes_md(text: str) -> list[str]:
    section = text.split("## How to read the tables\n\n")[1].split("\n\n")[0]
    return [line[2:] for line in section.splitlines()]


def test_report_md_and_html_say_the_same_notes(tiny_report):
    markdown, page = (tiny_report / "report.md").read_text(), (tiny_report / "report.html").read_text()
    notes = _notes_md(markdown)
    section = page.split("<section id='notes'>")[1].split("</section>")[0]
    items = [
        htmllib.unescape(li.replace("<code>", "`").replace("</code>", "`"))
        for li in re.findall(r"<li>(.*?)</li>", section)
    ]
    assert items == notes and "<code>emanet import-weights</code>" in section
    said = " ".join(notes)
    assert "[U] unconfirmed" in said and "MiB" in said and "always Table 1's setting" in said
    assert "Δ is ours minus the paper's" in said
    for text in (markdown, htmllib.unescape(page)):  # each table's own notes in both, too
        assert "torchstat's total memory" in text


def test_html_has_contents_provenance_scrolling_tables_and_figures_by_their_table(tiny_report, params):
    page = (tiny_report / "report.html").read_text()
    for name in params["tables"]:
        assert f"<a href='#{name}'>" in page and f"<section id='{name}'>" in page
    assert page.count("<div class='scroll'><table>") == len(params["tables"])
    fig4 = page.split("<section id='fig4'>")[1].split("</section>")[0]
    assert "figures/fig4.png" in fig4 and "figures/training_fig4.png" in fig4
    assert "figures/per_class.png" in page.split("<section id='table1'>")[1].split("</section>")[0]
    header = page.split("<div class='prov'>")[1].split("</div>")[0]
    assert "Profile: tiny." in header and "commit" in header and "UTC" in header
    assert "<td>ema512</td><td>finished</td><td>–</td><td>abc</td>" in page  # each run's state and training identity


class _Captured(Exception):
    pass


def _capture(monkeypatch):
    """Make figures._save hand back the matplotlib figure instead of writing it."""

    def save(fig, path, title, mark="", setting=""):
        raise _Captured(fig, title)

    monkeypatch.setattr(figures, "_save", save)


def test_per_class_draws_absent_classes_as_absent_in_label_order(tmp_path, monkeypatch):
    metrics = tmp_path / "metrics.json"
    # rows = ground truth: bicycle's one pixel is predicted bird; bird is predicted twice, never true
    matrix = [[9, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    atomic_write_json(
        metrics,
        {"per_class": {"background": 0.9, "aeroplane": None, "bicycle": 0.0, "bird": 0.0}, "confusion_matrix": matrix},
    )
    _capture(monkeypatch)
    with pytest.raises(_Captured) as caught:
        figures.per_class(metrics, tmp_path / "p.png", ["background", "aeroplane", "bicycle", "bird"])
    ax = caught.value.args[0].axes[0]
    labels = ["0 background", "1 aeroplane", "2 bicycle", "3 bird"]
    assert [t.get_text() for t in ax.get_yticklabels()] == labels
    bars = {round(p.get_y() + p.get_height() / 2): p.get_width() for p in ax.patches}
    assert bars == {0: pytest.approx(90.0), 2: 0.0}  # bars for measured IoUs only, a real 0 included
    texts = [t.get_text() for t in ax.texts]
    assert "absent (no pixels)" in texts and "no ground-truth pixels, 2 predicted (IoU 0 in the mIoU)" in texts


def test_fig4_keeps_its_scale_to_our_values_and_points_at_the_papers(tmp_path, monkeypatch, params):
    for name in ("r50_t1", "r50_t2", "r50", "r50_t4"):
        _fake_run(tmp_path, name, {f"ss_T{t}": 0.40 + 0.01 * t for t in range(1, 9)})
    fig4 = {t.name: t for t in build_tables(params, tmp_path)}["fig4"]
    _capture(monkeypatch)
    with pytest.raises(_Captured) as caught:
        figures.lines(fig4, tmp_path / "fig4.png", "Fig. 4 analogue")
    ax = caught.value.args[0].axes[0]
    low, high = ax.get_ylim()
    assert 40 < low < 41 and 48 < high < 60  # the paper's 78.52 does not stretch the axis
    assert any("paper 78.52" in t.get_text() and "off scale" in t.get_text() for t in ax.texts)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:4] == ["T_train=1", "T_train=2", "T_train=3", "T_train=4"] and labels[4].startswith("paper")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: p["tables"]["table1"]["rows"][1].update(experiment="nope"), "'nope' is not in experiments"),
        (lambda p: p["tables"]["table1"]["columns"][0].update(source="metric:sss"), "unknown evaluation protocol"),
        (
            lambda p: p["tables"]["table1"]["columns"][2].update(source="cost:flops"),
            "expected metric:<protocol> or cost",
        ),
        (lambda p: p["tables"]["fig4"]["rows"][2]["paper"].update(t9=1.0), "'t9' is not a column"),
        (lambda p: p["tables"]["table1"]["rows"][0].update(confidence="X"), "confidence: expected one of"),
        (lambda p: p["tables"]["table1"].pop("title"), "missing key 'tables.table1.title'"),
        (lambda p: p.update(datasets=["voc"]), "datasets: lists"),
    ],
)
def test_table_schema_errors_name_the_key(params, mutate, message):
    broken = copy.deepcopy(params)
    mutate(broken)
    with pytest.raises(ConfigError, match=message):
        plan.datasets(broken, "tiny")


def test_protocols_come_from_the_tables(params):
    assert plan.protocols(params, "ema512") == ["ss", "ms_flip"]
    assert plan.protocols(params, "r50_t2") == ["ss"] + [f"ss_T{t}" for t in range(1, 9)]
    assert plan.tables_of(params, "ema512") == ["attention", "k_sweep", "table1", "table2_stages"]


def test_predictions_and_responsibilities_name_their_images_and_share_one_scale(prepared_root, params, monkeypatch):
    import torch

    from emanet.config import resolve
    from emanet.data.loading.dataset import SegmentationDataset
    from emanet.engine.samples import BASES, samples
    from emanet.models import build_model

    cfg = resolve(params, "tiny", experiment="ema512")
    dataset = SegmentationDataset(prepared_root / "voc", "val")
    model = build_model(cfg.model, dataset.num_classes).eval()
    arrays = samples(model, dataset, torch.device("cpu"))
    assert list(arrays["ids"]) == dataset.ids[:3] and len(arrays["bases"]) == BASES
    assert arrays["responsibilities_0"].shape == (BASES, *arrays["image_0"].shape[:2])
    _capture(monkeypatch)
    with pytest.raises(_Captured) as caught:
        figures.qualitative(arrays, prepared_root / "unused.png", "Qualitative predictions of ema512")
    fig, title = caught.value.args
    titles = [ax.get_title() for ax in fig.axes]
    assert all(f"{dataset.ids[i]}: image" in titles for i in range(3))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend and all(re.fullmatch(r"\d+ \w+", text) for text in legend)
    with pytest.raises(_Captured) as caught:
        figures.responsibilities(arrays, prepared_root / "unused.png", "Responsibilities")
    fig = caught.value.args[0]
    limits = {ax.images[0].get_clim() for ax in fig.axes if ax.images and ax.get_title().startswith("basis")}
    assert len(limits) == 1 and next(iter(limits))[0] == 0.0  # one scale for every map of both images
    assert sum(ax.get_title() == dataset.ids[1] for ax in fig.axes) == 1  # two images, one row each
    assert any(ax.get_ylabel().startswith("responsibility Z") for ax in fig.axes)  # the colour bar


# Figures declared in params.yaml (emanet/plan/figures.py), drawn from run folders only.


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: p["tables"].update(maintenance=p["tables"].pop("fig3")), "figures.fig3.table: 'fig3' is not a key"),
        (lambda p: p["figures"]["per_class"].update(experiment="nope"), "figures.per_class.experiment: 'nope' is not"),
        (lambda p: p["figures"]["per_class"].update(experiment="fcn", table="fig3"), "figures.per_class.experiment"),
        (lambda p: p["figures"]["fig3"].update(column="ms_flip"), "figures.fig3.column: 'ms_flip' is not a column"),
        (lambda p: p["figures"]["fig3"].update(group_by="model.ema.nope"), "figures.fig3.group_by"),
        (lambda p: p["figures"]["fig3"].update(kind="pie"), "figures.fig3.kind: expected one of"),
        (lambda p: p["figures"]["fig3"].pop("column"), "missing key 'figures.fig3.column'"),
        (lambda p: p["figures"]["fig4"].update(column="t1"), "unknown key 'figures.fig4.column'"),
        (lambda p: p["figures"]["fig4"].update(table="table1"), "tables.table1.columns.0. .metric:ss. has no"),
        (lambda p: p["figures"]["predictions"].update(title="{run}"), "figures.predictions.title: {run} is not"),
        (lambda p: p["figures"]["per_class"].update(protocol="sss"), "figures.per_class.protocol"),
        (lambda p: p["figures"].update(training_table1=p["figures"]["fig3"]), "figures.training_table1: a figure"),
    ],
)
def test_figure_schema_errors_name_the_key(params, mutate, message):
    broken = copy.deepcopy(params)
    mutate(broken)
    with pytest.raises(ConfigError, match=message):
        plan.validate(broken)


def test_a_renamed_table_keeps_its_figure_when_the_figure_follows(tmp_path, params, complexity):
    renamed = copy.deepcopy(params)
    renamed["tables"] = {("maintenance" if k == "fig3" else k): v for k, v in params["tables"].items()}
    renamed["figures"]["fig3"]["table"] = "maintenance"
    plan.validate(renamed)
    _fake_results(tmp_path, renamed, complexity)
    page = build_report(renamed, "tiny", tmp_path).read_text()
    section = page.split("<section id='maintenance'>")[1].split("</section>")[0]
    assert "figures/fig3.png" in section and "Fig. 3 analogue" in section


def test_bar_colours_come_from_the_rows_settings(tmp_path, params, complexity, monkeypatch):
    _fake_results(tmp_path, params, complexity)
    drawn = {}
    original = figures.bars

    def bars(table, column, path, title, groups=None, legend="", mark="", setting=""):
        drawn.update(column=column, groups=groups, legend=legend)
        return original(table, column, path, title, groups, legend, mark, setting)

    monkeypatch.setattr(figures, "bars", bars)
    build_report(params, "tiny", tmp_path)
    assert drawn["column"] == "ss" and drawn["legend"] == "bar colour: bases maintained by"
    assert drawn["groups"] == ["moving average"] * 3 + ["fixed random"] * 3 + ["back-propagation"] * 3


def _fake_samples(run, classes=("background", "aeroplane", "bicycle")):
    """A samples.npz as emanet.engine.samples writes it: 2 images, 3 bases, an EMA head."""
    rng = np.random.default_rng(0)
    arrays = {
        "ids": np.array(["2007_000001", "2007_000002"]),
        "classes": np.array(classes),
        "split": np.array("val"),
        "labelled": np.array(True),
        "bases": np.array([5, 0, 2]),
    }
    for i in range(2):
        arrays[f"image_{i}"] = rng.integers(0, 255, (9, 13, 3), dtype=np.uint8)
        arrays[f"label_{i}"] = rng.integers(0, 3, (9, 13), dtype=np.uint8)
        arrays[f"prediction_{i}"] = rng.integers(0, 3, (9, 13), dtype=np.uint8)
        arrays[f"responsibilities_{i}"] = rng.random((3, 9, 13), dtype=np.float32)
    np.savez_compressed(run / SAMPLES, **arrays)


def test_the_report_draws_run_figures_from_the_run_folder_without_model_code(tmp_path, params, complexity, monkeypatch):
    import emanet.engine.evaluate
    import emanet.models

    def refuse(*args, **kwargs):
        raise AssertionError("the report built a model")

    monkeypatch.setattr(emanet.models, "build_model", refuse)
    monkeypatch.setattr(emanet.engine.evaluate, "load_trained", refuse)
    _fake_results(tmp_path, params, complexity)
    run = tmp_path / "runs/ema512"
    (run / "model.pt").write_bytes(b"not a model: the report must not read it")
    _fake_samples(run, classes=("background", "person"))
    page = build_report(params, "tiny", tmp_path).read_text()
    table1 = page.split("<section id='table1'>")[1].split("</section>")[0]
    for name in ("per_class", "predictions", "responsibilities"):
        assert f"figures/{name}.png" in table1, name
    assert "Predictions of EMANet (512), val images by id" in table1
    assert png_text(tmp_path / "report/figures/predictions.png")["Title"] == (
        "Qualitative predictions of ema512 (single scale)"
    )


def test_run_figures_wait_for_the_samples_file(tiny_report):
    made = {p.name for p in (tiny_report / "figures").iterdir()}
    assert "per_class.png" in made and not {"predictions.png", "responsibilities.png"} & made


def test_the_report_imports_nothing_from_the_engine_or_the_models():
    for path in sorted((ROOT / "emanet/report").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not name.startswith(("emanet.engine", "emanet.models", "torch")), f"{path}: imports {name}"


def test_importing_the_report_loads_neither_torch_nor_the_model_code():
    """The direct imports above are not enough: a module the report imports could pull torch in (the notes
    once reached the FLOP counter, emanet.bench.complexity, for two torch-free functions)."""
    heavy = "('torch', 'emanet.engine', 'emanet.models', 'emanet.bench.complexity')"
    loaded = f"sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith({heavy}))"
    probe = f"import sys, emanet.report; print({loaded})"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_evaluate_writes_the_samples_the_report_draws(tmp_path, prepared_root, params):
    """samples.npz holds the configured split's first images with the model's own single-scale predictions."""
    import torch

    from emanet.config import resolve
    from emanet.data.loading.dataset import SegmentationDataset
    from emanet.data.loading.transforms import EvalTransform
    from emanet.engine.evaluate import evaluate, load_trained, predict
    from emanet.models import build_model

    cfg = resolve(params, "tiny", [f"data.root={prepared_root}", "tracking.enabled=false"], "ema512")
    run_dir = tmp_path / "runs/ema512"
    run_dir.mkdir(parents=True)
    torch.save(build_model(cfg.model, num_classes=21).state_dict(), run_dir / "model.pt")
    evaluate(cfg, run_dir, ["ss"])
    arrays = figures.read_samples(run_dir / SAMPLES)
    dataset = SegmentationDataset(prepared_root / "voc", "val", EvalTransform())
    model = load_trained(cfg, run_dir, 21, torch.device("cpu"))
    assert list(arrays["ids"]) == dataset.ids[:3] and str(arrays["split"]) == "val"
    for i in range(3):
        image, label = dataset[i]
        assert np.array_equal(arrays[f"prediction_{i}"], predict(model, image, None, False).numpy())
        assert np.array_equal(arrays[f"label_{i}"], label.numpy())
    assert set(arrays) >= {"bases", "responsibilities_0", "responsibilities_1"} and "responsibilities_2" not in arrays
