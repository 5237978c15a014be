"""What a Python file imports, read from its source (ast), for the tests that check import rules
(tests/test_plan.py: the engine imports nothing from orchestration; tests/test_data_stages.py: the data
stages stay apart)."""

from __future__ import annotations

import ast
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    """The dotted module name of ``path`` under the import root ``root`` (a package's ``__init__.py`` gives the
    package's name): ``root/emanet/data/convert/voc.py`` -> ``emanet.data.convert.voc``."""
    parts = path.resolve().relative_to(root.resolve()).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the text of the module named ``module``; ``is_package`` for an ``__init__.py``)
    imports, at module level or inside a function, as absolute dotted names. A relative import is resolved
    against the importing module's package (``from ..convert import sources`` in ``emanet.data.loading.x`` is
    ``emanet.data.convert``); ``from a import b`` counts as both ``a`` and ``a.b`` (b may be a submodule).
    Raises ValueError for a relative import that climbs above the top-level package."""
    found: set[str] = set()
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source, module)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                kept = len(package) - (node.level - 1)
                if kept < 1:
                    raise ValueError(f"{module}: relative import of level {node.level} climbs above {package[0]!r}")
                base = ".".join(package[:kept] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def file_imports(path: Path, root: Path) -> set[str]:
    """:func:`imported_modules` of the file ``path``, its module name taken from its place under ``root``."""
    return imported_modules(path.read_text(), module_name(path, root), path.name == "__init__.py")
