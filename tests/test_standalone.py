"""The repository stands alone: no tracked file points outside it, and every pointer into docs/ resolves.

For every text file that git tracks: no path under a sibling ``shared`` folder, no absolute path into this
machine's work tree, no ``../`` path (in prose: Markdown, YAML, Snakemake rules, Python comments and
docstrings) that leaves the repository when resolved from the file's folder; every ``docs/<file>.md``
named exists, and every ``docs/<file>.md#anchor`` (and, inside docs/, every ``<file>.md#anchor`` or
``#anchor`` link) names a heading of that file, with GitHub's anchor rule (lower case, punctuation
dropped, spaces to hyphens, ``-1``, ``-2``... for repeats).
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Built from pieces so that this file does not match its own patterns.
_SHARED = re.compile(r"(?<![\w-])" + "sha" + r"red/")
_WORK = re.compile(r"(?<![\w.~-])/" + "wo" + r"rk(?![\w-])")
_PARENT = re.compile(r"(?<![\w.:/])((?:\.\./)+[\w.<>-][\w./<>-]*)")
_DOCS = re.compile(r"(?<![\w/.-])docs/([\w-]+\.md)(#[\w-]*)?")
_DOCS_LINK = re.compile(r"\]\((#[\w-]*|[\w-]+\.md(?:#[\w-]*)?)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
_PROSE_SUFFIXES = {".md", ".yaml", ".yml", ".smk", ".txt", ".toml", ".cfg", ".sh", ""}


def tracked_files(root: Path = ROOT) -> list[str]:
    """The repository's tracked files, relative to ``root`` (``git ls-files``)."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def _text(path: Path) -> str | None:
    """The file's text, or None for a binary or undecodable file (or a missing one, e.g. deleted unstaged)."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of every heading outside code fences: lower case, punctuation dropped, spaces to
    hyphens, a repeated anchor numbered ``-1``, ``-2``..."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if not match:
            continue
        text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1)).lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def _python_prose(text: str) -> str:
    """The comments and docstrings of a Python source, one per line (the rest of the code is data)."""
    parts = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.COMMENT:
                parts.append(token.string)
        tree = ast.parse(text)
    except (SyntaxError, tokenize.TokenError):
        return text
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                parts.append(doc)
    return "\n".join(parts)


def problems(root: Path, files: list[str]) -> list[str]:
    """Every pointer of ``files`` (paths relative to ``root``) that leaves the repository or does not
    resolve in docs/, as ``"<file>: <what>"``."""
    root = root.resolve()
    texts = {name: _text(root / name) for name in files}
    heading_cache: dict[str, set[str] | None] = {}

    def doc_anchors(name: str) -> set[str] | None:
        if name not in heading_cache:
            text = _text(root / "docs" / name)
            heading_cache[name] = None if text is None else anchors(text)
        return heading_cache[name]

    def check_doc(where: str, name: str, anchor: str | None, found: list[str]) -> None:
        heads = doc_anchors(name)
        if heads is None:
            found.append(f"{where}: docs/{name} does not exist")
        elif anchor and anchor[1:] not in heads:
            found.append(f"{where}: docs/{name}{anchor} names no heading of docs/{name}")

    found: list[str] = []
    for name, text in texts.items():
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if _SHARED.search(line):
                found.append(f"{name}:{number}: points into a folder outside the repository: {line.strip()}")
            if _WORK.search(line):
                found.append(f"{name}:{number}: an absolute path of this machine: {line.strip()}")
            for match in _DOCS.finditer(line):
                check_doc(f"{name}:{number}", match.group(1), match.group(2), found)
            if name.startswith("docs/") and name.endswith(".md"):
                for match in _DOCS_LINK.finditer(line):
                    target, _, anchor = match.group(1).partition("#")
                    check_doc(
                        f"{name}:{number}", target or name[len("docs/") :], f"#{anchor}" if anchor else None, found
                    )
        suffix = Path(name).suffix
        prose = _python_prose(text) if suffix == ".py" else text if suffix in _PROSE_SUFFIXES else ""
        for match in _PARENT.finditer(prose):
            target = (root / name).parent / match.group(1)
            if not target.resolve().is_relative_to(root):
                found.append(f"{name}: {match.group(1)} leaves the repository")
    return found


def test_no_tracked_file_points_outside_the_repository_or_to_a_missing_doc():
    found = problems(ROOT, tracked_files())
    assert not found, "fix these pointers (the docs live in docs/):\n" + "\n".join(found)


def test_the_docs_exist_with_the_headings_the_code_points_at():
    for name in ("reproducing.md", "datasets.md", "faq.md", "architecture.md", "run-folder.md"):
        assert (ROOT / "docs" / name).is_file(), name
    assert {"confidence-letters", "training-recipe", "fidelity-checklist"} <= anchors(
        (ROOT / "docs/reproducing.md").read_text()
    )


def test_anchors_follow_githubs_rule():
    text = "# Title\n## Cannot reproduce 80.05\n## The `EMA` head: **why**\n```\n## not a heading\n```\n## Title\n"
    assert anchors(text) == {"title", "cannot-reproduce-8005", "the-ema-head-why", "title-1"}


def test_a_planted_bad_pointer_is_found(tmp_path):
    docs = "do" + "cs"  # spelt in pieces: this file is itself checked
    (tmp_path / docs).mkdir()
    (tmp_path / docs / "guide.md").write_text("# Guide\n## Known part\n[ok](#known-part) [bad](#nowhere)\n")
    (tmp_path / "sub").mkdir()
    shared = "../" + "sha" + "red/reference/paper.md"
    (tmp_path / "sub/notes.md").write_text(
        f"see {docs}/guide.md#known-part and {docs}/guide.md\n"  # fine
        f"see {docs}/guide.md#missing-part\n"  # anchor missing
        f"see {docs}/absent.md\n"  # file missing
        f"see {shared}\n"  # a sibling folder
        "see ../../outside/file.txt\n"  # leaves the repository
        f"see ../{docs}/guide.md\n"  # stays inside: fine
        "data in /" + "work/main/x\n"  # an absolute path of this machine
    )
    (tmp_path / "sub/code.py").write_text(
        '"""Docstring: ../../escape.md."""\n\nPATH = "../../a/string/is/data"  # comment: ../../too/far\n'
    )
    found = problems(tmp_path, [f"{docs}/guide.md", "sub/notes.md", "sub/code.py"])
    text = "\n".join(found)
    assert f"{docs}/guide.md#nowhere names no heading" in text
    assert f"{docs}/guide.md#missing-part names no heading" in text
    assert f"{docs}/absent.md does not exist" in text
    assert "points into a folder outside the repository" in text
    assert "../../outside/file.txt leaves the repository" in text
    assert "an absolute path of this machine" in text
    assert "../../escape.md" in text and "../../too/far" in text
    assert "a/string/is/data" not in text and "known-part names" not in text and f"../{docs}/guide.md" not in text
    assert len(found) == 8, text
