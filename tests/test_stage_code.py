"""emanet.runs.code.STAGE_CODE is complete: every emanet module a stage's entry module imports (directly or
through other modules, at module level or inside a function, absolute or relative) is either listed as the
stage's code or in the one allow-list of modules that determine no output (NOT_DETERMINING).

A module's imports are read from its source (tests/helpers/imports.py). A name resolves to the deepest
module file it names (``emanet.plan.tables.HEAD_SPECS`` -> emanet/plan/tables.py); a package's
``__init__.py`` counts only when something is imported from the package itself (``from emanet.plan import
validate``), not when it is merely the path to a submodule. Modules of NOT_DETERMINING are not followed
further: what they import serves them alone unless another module imports it too (then it is followed
from there)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from emanet.runs.code import NOT_DETERMINING, ROOT, STAGE_CODE, code_files
from tests.helpers.imports import file_imports

#: stage -> the module that runs it (the CLI only parses arguments and calls it).
ENTRIES = {
    "train": "emanet/engine/train.py",
    "evaluate": "emanet/engine/evaluate.py",
    "report": "emanet/report/__init__.py",
    "complexity": "emanet/bench/complexity.py",
}


def _module_file(name: str, root: Path) -> Path | None:
    """The file of the deepest module ``name`` or one of its prefixes names, None outside the tree."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        base = root.joinpath(*parts[:end])
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py")
    return None


def emanet_imports(path: Path, root: Path = ROOT) -> set[Path]:
    """The emanet module files ``path`` imports (module docstring's rules)."""
    names = {n for n in file_imports(path, root) if n == "emanet" or n.startswith("emanet.")}
    resolved = {name: _module_file(name, root) for name in names}
    found = set()
    for name, file in resolved.items():
        if file is None:
            continue
        package_path_only = (
            file.name == "__init__.py"
            and any(other.startswith(name + ".") and resolved[other] not in (None, file) for other in names)
            and not any(other.startswith(name + ".") and resolved[other] == file for other in names)
        )
        if not package_path_only:
            found.add(file)
    return found


def closure(entry: Path, root: Path = ROOT) -> dict[Path, Path | None]:
    """Every emanet module ``entry`` reaches through imports -> the module that first imported it (None for
    ``entry``); modules of NOT_DETERMINING are included but not followed."""
    seen: dict[Path, Path | None] = {entry: None}
    todo = [entry]
    while todo:
        current = todo.pop()
        if current.relative_to(root).as_posix() in NOT_DETERMINING:
            continue
        for found in sorted(emanet_imports(current, root)):
            if found not in seen:
                seen[found] = current
                todo.append(found)
    return seen


def _docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)


@pytest.mark.parametrize("stage", sorted(ENTRIES))
def test_every_module_a_stage_imports_is_its_code_or_determines_no_output(stage):
    listed = set(code_files(stage))
    reached = closure(ROOT / ENTRIES[stage])
    missing = {
        module.relative_to(ROOT).as_posix(): importer.relative_to(ROOT).as_posix() if importer else None
        for module, importer in reached.items()
        if module not in listed
        and module.relative_to(ROOT).as_posix() not in NOT_DETERMINING
        and not _docstring_only(module)
    }
    assert not missing, f"{stage}: imported but neither in STAGE_CODE nor NOT_DETERMINING (module: importer): {missing}"


def test_the_allow_list_holds_existing_modules_no_stage_lists():
    every = {path for stage in STAGE_CODE for path in code_files(stage)}
    for module, reason in NOT_DETERMINING.items():
        assert (ROOT / module).is_file() and reason, module
        assert ROOT / module not in every, f"{module} is both a stage's code and in NOT_DETERMINING"


def test_the_entry_modules_are_their_stages_code():
    for stage, entry in ENTRIES.items():
        assert ROOT / entry in code_files(stage), stage


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_closure_follows_relative_function_local_and_indirect_imports(tmp_path):
    root = _tree(
        tmp_path,
        {
            "emanet/__init__.py": '"""doc"""\n',
            "emanet/pkg/__init__.py": "X = 1\n",
            "emanet/pkg/entry.py": "from . import near\n\ndef f():\n    from emanet.pkg.far import g\n",
            "emanet/pkg/near.py": "from ..deep.leaf import y\n",
            "emanet/pkg/far.py": "import emanet.pkg\n",
            "emanet/deep/__init__.py": '"""doc"""\n',
            "emanet/deep/leaf.py": "y = 2\n",
            "emanet/deep/unused.py": "z = 3\n",
        },
    )
    reached = {p.relative_to(root).as_posix() for p in closure(root / "emanet/pkg/entry.py", root)}
    assert reached == {
        "emanet/pkg/entry.py",
        "emanet/pkg/near.py",  # relative, module level
        "emanet/deep/leaf.py",  # through near, relative with a climb
        "emanet/pkg/far.py",  # inside a function
        "emanet/pkg/__init__.py",  # `import emanet.pkg` in far: the package itself
    }


def test_a_module_missing_from_a_stage_is_named_with_its_importer(monkeypatch):
    """The check fails when the evaluation's palette (data/classes.py) is dropped from its stage's code."""
    from emanet.runs import code

    kept = tuple(p for p in STAGE_CODE["evaluate"] if p != "emanet/data/classes.py")
    monkeypatch.setitem(code.STAGE_CODE, "evaluate", kept)
    with pytest.raises(AssertionError, match=r"emanet/data/classes.py': 'emanet/engine/evaluate.py"):
        test_every_module_a_stage_imports_is_its_code_or_determines_no_output("evaluate")
