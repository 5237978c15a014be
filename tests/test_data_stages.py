"""emanet.data is grouped by stage and the stages stay apart: checked on the source (ast), not by convention.

The data flows archives -> convert (prepare) -> the prepared layout -> loading. ``files.py`` (low-level
readers, DataError) and ``layout.py`` (the prepared layout's contract) are what the stages share; the
stages never reach into each other sideways. Also: a Sample names its label reader by the function,
so a converter cannot pick a reader by a misspelt tag.
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

import emanet.data
from emanet.data.convert import labels
from emanet.data.convert.conversion import Sample
from tests.helpers.imports import file_imports, imported_modules, module_name

DATA = Path(emanet.data.__file__).parent
ROOT = DATA.parents[1]  # the import root: emanet/ is below it
STAGES = ("archives", "convert", "loading", "synthetic")
#: stage (or shared module) -> the emanet.data parts it must not import
FORBIDDEN = {
    "archives": ("convert", "loading", "synthetic", "layout"),
    "convert": ("loading", "synthetic"),
    "loading": ("archives", "convert", "synthetic"),
    "files": STAGES + ("layout",),
    "layout": STAGES,
    "classes": STAGES + ("files", "layout"),
}
#: stages that must load without torch (they run in `emanet download` / `emanet prepare`)
TORCH_FREE = ("archives", "convert", "files", "layout", "classes")


def _modules(part: str) -> list[tuple[str, Path]]:
    """(dotted name, file) of every module of ``emanet.data.<part>`` (a subpackage or one module)."""
    path = DATA / part
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    return [(module_name(f, ROOT), f) for f in files]


def _hits(imports: set[str], parts: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imports for p in parts if m == f"emanet.data.{p}" or m.startswith(f"emanet.data.{p}."))


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_a_stage_imports_no_other_stage_sideways(part):
    modules = _modules(part)
    assert modules, f"emanet/data/{part} has no Python files"
    wrong = {name: _hits(file_imports(f, ROOT), FORBIDDEN[part]) for name, f in modules}
    assert not {k: v for k, v in wrong.items() if v}, f"emanet.data.{part} must not import {FORBIDDEN[part]}"


@pytest.mark.parametrize("part", TORCH_FREE)
def test_download_and_prepare_stages_need_no_torch(part):
    for name, f in _modules(part):
        imports = file_imports(f, ROOT)
        assert not {m for m in imports if m.split(".")[0] in ("torch", "torchvision")}, name


def test_the_import_check_sees_what_it_must_refuse():
    source = (
        "import os\nfrom emanet.data.convert.prepare import prepare\nfrom emanet.data import archives\n"
        "def f():\n    from ..convert import sources\n    import torch.nn\n"
    )
    imports = imported_modules(source, "emanet.data.loading.dataset")
    assert _hits(imports, FORBIDDEN["loading"]) == [
        "emanet.data.archives",
        "emanet.data.convert",
        "emanet.data.convert.prepare",
        "emanet.data.convert.prepare.prepare",
        "emanet.data.convert.sources",
    ]
    assert "torch.nn" in imports
    assert not _hits(imported_modules("from emanet.data import layout, files", "emanet.data.loading.x"), STAGES)


def test_relative_imports_resolve_against_the_package_of_the_module(tmp_path):
    package = "from . import sources\nfrom .. import layout\n"
    assert {"emanet.data.convert.sources", "emanet.data.layout"} <= imported_modules(
        package, "emanet.data.convert", is_package=True
    )
    assert "emanet.data.loading.sources" in imported_modules(package, "emanet.data.loading.x")
    assert "emanet.data.files.read_id_list" in imported_modules(
        "from ..files import read_id_list", "emanet.data.loading.x"
    )
    assert module_name(DATA / "convert" / "__init__.py", ROOT) == "emanet.data.convert"
    assert module_name(DATA / "convert" / "voc.py", ROOT) == "emanet.data.convert.voc"
    (tmp_path / "pkg").mkdir()
    init = tmp_path / "pkg" / "__init__.py"
    init.write_text("def f():\n    from .sub import g\n")
    assert file_imports(init, tmp_path) == {"pkg.sub", "pkg.sub.g"}
    with pytest.raises(ValueError, match="climbs above"):
        imported_modules("from ... import x", "emanet.data")


def test_every_subpackage_says_what_it_holds_and_which_stage_it_serves():
    for stage in STAGES:
        doc = ast.get_docstring(ast.parse((DATA / stage / "__init__.py").read_text()))
        assert doc and "stage" in doc.lower(), f"emanet/data/{stage}/__init__.py: docstring must name its stage"


def test_a_sample_holds_its_label_reader_itself(tmp_path):
    image, label = tmp_path / "a.jpg", tmp_path / "a.png"
    sample = Sample("a", image, label, labels.voc_png)
    assert sample.reader is labels.voc_png
    assert pickle.loads(pickle.dumps(sample)) == sample  # the worker pool gets it by reference
    with pytest.raises(TypeError, match="'voc_png' is not a label reader"):
        Sample("a", image, label, "voc_png")
    with pytest.raises(TypeError, match="is not a label reader"):
        Sample("a", image, label, lambda path: path)
    with pytest.raises(TypeError, match="both be set or both be None"):
        Sample("a", image, label, None)
    with pytest.raises(TypeError, match="both be set or both be None"):
        Sample("a", image, None, labels.voc_png)
    assert Sample("a", image, None, None).reader is None  # a split without public labels (VOC test)
