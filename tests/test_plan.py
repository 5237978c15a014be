"""The plan (emanet.plan) and the protocol grammar (emanet.protocols): one grammar with its inverse, a plan that
stays torch-free, and an engine that imports nothing from orchestration, benchmarks, report or tracking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emanet.config import ConfigError, load_params
from emanet.protocols import Protocol
from tests.helpers.imports import file_imports

ROOT = Path(__file__).resolve().parents[1]

protocols = st.builds(
    Protocol, st.booleans(), st.booleans(), st.one_of(st.none(), st.integers(min_value=1, max_value=10**6))
)


@given(protocols)
def test_a_protocol_name_parses_back_to_the_protocol(protocol):
    assert Protocol.parse(protocol.name) == protocol


@given(st.from_regex(r"\A(ss|ms)(_flip)?(_T[1-9][0-9]{0,5})?\Z"))
def test_a_name_of_the_grammar_is_written_back_unchanged(name):
    assert Protocol.parse(name).name == name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ss", Protocol(False, False, None)),
        ("ms_flip", Protocol(True, True, None)),
        ("ss_T3", Protocol(False, False, 3)),
        ("ms_flip_T4", Protocol(True, True, 4)),
        ("ss_flip", Protocol(False, True, None)),
        ("ms_T12", Protocol(True, False, 12)),
    ],
)
def test_protocol_names(name, expected):
    assert Protocol.parse(name) == expected
    assert expected.name == name


@pytest.mark.parametrize("name", ["", "sss", "SS", "flip", "ms_T0", "ss_T01", "ss_T", "ss_flip_flip", "ss_T3_flip", 3])
def test_a_name_outside_the_grammar_is_named_in_the_error(name):
    with pytest.raises(ConfigError, match=f"unknown evaluation protocol {name!r}"):
        Protocol.parse(name)


@pytest.mark.parametrize("stages", [0, -1, True])
def test_a_protocol_has_at_least_one_em_iteration(stages):
    with pytest.raises(ValueError, match="T_eval"):
        Protocol(False, False, stages)


def test_a_bad_metric_column_names_its_key():
    from emanet import plan

    params = load_params(ROOT / "params.yaml")
    params["tables"]["table1"]["columns"][0]["source"] = "metric:ms_T0"
    with pytest.raises(ConfigError, match=r"tables\.table1\.columns\[0\]\.source: unknown evaluation protocol"):
        plan.validate(params)


def test_every_protocol_the_tables_need_parses():
    from emanet import plan

    params = load_params(ROOT / "params.yaml")
    for run in plan.runs(params):
        for name in plan.protocols(params, run):
            assert Protocol.parse(name).name == name


def test_the_cost_rows_are_the_heads_the_benchmark_measures():
    from emanet.bench import cost_table
    from emanet.plan.tables import COST_ROWS, HEAD_SPECS

    assert cost_table.HEAD_SPECS is HEAD_SPECS
    assert set(cost_table.PAPER_TABLE1) <= set(COST_ROWS)


def test_the_plan_and_the_grammar_import_no_torch_engine_or_benchmark():
    """Snakemake imports the plan at parse time and in every job: it must stay light."""
    code = (
        "import sys, emanet.plan, emanet.protocols, emanet.data.archives.catalog; "
        "print(' '.join(m for m in sys.modules if m == 'torch' or m.startswith(('emanet.engine', 'emanet.bench', "
        "'emanet.models', 'emanet.commands', 'emanet.report', 'emanet.tracking'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.split() == []


#: Packages below the orchestration, and what they may not import: the plan, benchmarks, commands, CLI, report.
LOWER = ("emanet/engine", "emanet/models", "emanet/data", "emanet/protocols.py")
UPPER = ("emanet.plan", "emanet.bench", "emanet.commands", "emanet.cli", "emanet.report", "emanet.tracking")
#: What the engine still takes from emanet.tracking, exactly (a test checks each name is still imported), and
#: may not grow: MLflow logging during training and evaluation, and the git commit a run records.
TRACKING_LEFT = {
    "emanet/engine/train.py": {"Tracker", "git_commit"},
    "emanet/engine/evaluate.py": {"git_commit", "sync_run"},
    "emanet/engine/import_run.py": {"Tracker", "git_commit"},
}


def test_imported_modules_sees_function_local_and_relative_imports(tmp_path):
    source = tmp_path / "emanet" / "engine" / "m.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "import os\n\ndef f():\n    from emanet import plan\n    import emanet.bench.timings\n"
        "    from ..tracking import Tracker\n    from . import train\n"
    )
    found = file_imports(source, tmp_path)
    assert {"os", "emanet", "emanet.plan", "emanet.bench.timings", "emanet.tracking.Tracker"} <= found
    assert "emanet.engine.train" in found


def _lower_files() -> list[Path]:
    return [p for entry in LOWER for p in ([ROOT / entry] if entry.endswith(".py") else (ROOT / entry).rglob("*.py"))]


def test_the_engine_imports_nothing_from_orchestration():
    files = _lower_files()
    assert len(files) > 20
    bad = sorted(
        f"{path.relative_to(ROOT)} imports {module}"
        for path in files
        for module in file_imports(path, ROOT)
        if any(module == upper or module.startswith(upper + ".") for upper in UPPER)
        and not (module.startswith("emanet.tracking.") and module[len("emanet.tracking.") :] in _left(path))
        and not (module == "emanet.tracking" and _left(path))
    )
    assert bad == []


def test_the_tracking_allow_list_is_exactly_what_the_engine_imports():
    taken = {
        path: {
            m[len("emanet.tracking.") :] for m in file_imports(ROOT / path, ROOT) if m.startswith("emanet.tracking.")
        }
        for path in TRACKING_LEFT
    }
    assert taken == TRACKING_LEFT
    others = {
        path.relative_to(ROOT).as_posix()
        for path in _lower_files()
        if any(m == "emanet.tracking" or m.startswith("emanet.tracking.") for m in file_imports(path, ROOT))
    }
    assert others == set(TRACKING_LEFT)


def _left(path: Path) -> set[str]:
    return TRACKING_LEFT.get(path.relative_to(ROOT).as_posix(), set())


@pytest.mark.parametrize("protocol, added", [("ss_T5", ["ss_T5"]), ("ms", ["ms"]), (None, [])])
def test_a_per_class_figure_has_its_protocol_evaluated_and_in_the_evaluation_identity(protocol, added):
    import json

    from emanet import plan
    from emanet.runs.configure import identity_files

    params = load_params(ROOT / "params.yaml")
    before = {run: plan.protocols(params, run) for run in plan.runs(params)}
    identities = identity_files(params, "tiny")
    params["figures"]["per_class"].pop("protocol", None)
    if protocol is not None:
        params["figures"]["per_class"]["protocol"] = protocol
    plan.validate(params)
    assert plan.protocols(params, "ema512") == ["ss", *sorted(set(before["ema512"][1:]) | set(added))]
    assert {run: plan.protocols(params, run) for run in plan.runs(params) if run != "ema512"} == {
        run: p for run, p in before.items() if run != "ema512"
    }
    changed = identity_files(params, "tiny")
    differs = {path for path in identities if identities[path] != changed[path] and path != "report.json"}
    assert differs == ({"ema512/evaluate.json"} if added else set())
    assert all(p in json.dumps(changed["ema512/evaluate.json"]) for p in added)
