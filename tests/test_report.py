"""Tables from run folders (ours beside the paper's), the schema check, and the rendered report."""

from __future__ import annotations

import copy
import json

import pytest

from emanet import bench, pipeline
from emanet.config import ConfigError, load_params
from emanet.io import atomic_write_json
from emanet.report import build_report
from emanet.report.tables import build_tables, to_html, to_latex, to_markdown


def _fake_run(results, experiment, protocols):
    run = results / "runs" / experiment
    atomic_write_json(run / "run.json", {"mlflow_run_id": f"id-{experiment}", "config_hash": "abc"})
    for protocol, miou in protocols.items():
        name = "metrics.json" if protocol == "ss" else f"metrics_{protocol}.json"
        atomic_write_json(run / name, {"miou": miou, "per_class": {"background": miou, "person": None},
                                       "protocol": protocol})
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
    fcn = next(r for r in table1.rows if r.label.startswith("FCN"))
    assert fcn.cells["ss"].text == "" and fcn.cells["ss"].missing.endswith("metrics.json not found")
    markdown = to_markdown(table1)
    assert "| EMANet (512) | 81.05 / 80.05 [R] (+1.00)" in markdown
    assert "missing / n/p" in markdown and "not reimplemented" in markdown
    assert r"\begin{tabular}" in to_latex(table1) and r"81.05 & 80.05 [R]" in to_latex(table1)
    assert "href=\"../runs/ema512\"" in to_html(table1) and "MLflow run id-ema512" in to_html(table1)


def test_report_writes_every_table_and_figure(tmp_path, params):
    for name in pipeline.experiments(params):
        _fake_run(tmp_path, name, {p: 0.5 for p in pipeline.protocols(params, name)})
    atomic_write_json(tmp_path / "bench/complexity.json", bench.complexity())
    page = build_report(params, "tiny", tmp_path)
    html = page.read_text()
    assert "NOT comparable" in html and html.count("<table>") == len(params["tables"])
    for name in params["tables"]:
        assert (tmp_path / f"report/{name}.md").exists() and (tmp_path / f"report/{name}.tex").exists()
    figures = {p.name for p in (tmp_path / "report/figures").iterdir()}
    assert {"fig3.png", "fig4.png", "training_curves.png", "per_class.png"} <= figures
    numbers = json.loads((tmp_path / "report/report.json").read_text())
    assert numbers["profile"] == "tiny" and len(numbers["tables"]) == len(params["tables"])
    assert "NOT comparable" not in build_report(params, "paper", tmp_path).read_text()


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p["tables"]["table1"]["rows"][1].update(experiment="nope"), "'nope' is not in experiments"),
    (lambda p: p["tables"]["table1"]["columns"][0].update(source="metric:sss"), "unknown evaluation protocol"),
    (lambda p: p["tables"]["table1"]["columns"][2].update(source="cost:flops"), "expected metric:<protocol> or cost"),
    (lambda p: p["tables"]["fig4"]["rows"][2]["paper"].update(t9=1.0), "'t9' is not a column"),
    (lambda p: p["tables"]["table1"]["rows"][0].update(confidence="X"), "confidence: expected one of"),
    (lambda p: p["tables"]["table1"].pop("title"), "missing key 'tables.table1.title'"),
    (lambda p: p.update(datasets=["voc"]), "datasets: lists"),
])
def test_table_schema_errors_name_the_key(params, mutate, message):
    broken = copy.deepcopy(params)
    mutate(broken)
    with pytest.raises(ConfigError, match=message):
        pipeline.datasets(broken, "tiny")


def test_protocols_come_from_the_tables(params):
    assert pipeline.protocols(params, "ema512") == ["ss", "ms_flip"]
    assert pipeline.protocols(params, "r50_t2") == ["ss"] + [f"ss_T{t}" for t in range(1, 9)]
    assert pipeline.tables_of(params, "ema512") == ["attention", "k_sweep", "table1", "table2_stages"]
    assert pipeline.parse_protocol("ms_flip_T4") == (True, True, 4)
