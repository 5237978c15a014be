"""The plan (emanet.plan) and the protocol grammar (emanet.protocols): one grammar with its inverse, a plan that
stays torch-free, and an engine that imports nothing from orchestration, benchmarks, report or tracking."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emanet.config import ConfigError, load_params
from emanet.protocols import Protocol

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
#: What the engine still takes from emanet.tracking, and may not grow: MLflow logging during training and
#: evaluation, and the run-folder helpers (run.json, the git commit) that live there until emanet/runs has them.
TRACKING_LEFT = {
    "emanet/engine/train.py": {"Tracker", "git_commit", "read_run_info"},
    "emanet/engine/evaluate.py": {"git_commit", "read_run_info", "sync_run"},
    "emanet/engine/import_run.py": {"Tracker", "git_commit", "read_run_info"},
}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside a function (``from a import b`` gives
    ``a`` and ``a.b``, since b may be a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_imported_modules_sees_function_local_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from emanet import plan\n    import emanet.bench.timings\n")
    assert {"os", "emanet", "emanet.plan", "emanet.bench.timings"} <= imported_modules(source)


def _lower_files() -> list[Path]:
    return [p for entry in LOWER for p in ([ROOT / entry] if entry.endswith(".py") else (ROOT / entry).rglob("*.py"))]


def test_the_engine_imports_nothing_from_orchestration():
    files = _lower_files()
    assert len(files) > 20
    bad = sorted(
        f"{path.relative_to(ROOT)} imports {module}"
        for path in files
        for module in imported_modules(path)
        if any(module == upper or module.startswith(upper + ".") for upper in UPPER)
        and not (module.startswith("emanet.tracking.") and module[len("emanet.tracking.") :] in _left(path))
        and not (module == "emanet.tracking" and _left(path))
    )
    assert bad == []


def _left(path: Path) -> set[str]:
    return TRACKING_LEFT.get(path.relative_to(ROOT).as_posix(), set())
