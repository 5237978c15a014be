"""Text files that come from outside emanet (a dataset or a user), read by one set of rules.

Every list file, class list, ``labels.txt``, manifest, ``meta.json``, per-class CSV and ``params.yaml`` goes
through :func:`read_text_file`, so the rules are the same everywhere:

- **UTF-8 only.** A leading UTF-8 byte-order mark (Notepad, PowerShell's ``Out-File -Encoding utf8``,
  Excel's "CSV UTF-8") is dropped; anything else that is not UTF-8 is an error naming the file, where
  the first bad byte is, what the file probably is and how to re-save it as UTF-8.
- **UTF-16 and UTF-32 are refused, even with a byte-order mark** that would make them decodable: they are
  what Windows calls "Unicode" and what PowerShell 5's ``>`` writes, and the other tools that read these
  files (DVC, Snakemake, ``grep``, ``wc -l``, the official devkits) see NUL bytes in them. Refusing them
  with the conversion command keeps one encoding for every file the pipeline touches. A file with NUL
  bytes (UTF-16 without a byte-order mark, or a binary file given by mistake) is refused the same way.
- **Line ends**: CRLF (Windows) and lone CR (classic Mac OS) become LF.
- **Trailing blanks** (spaces and tabs at the end of a line) are removed. None of the formats read here
  gives them meaning (JSON strings cannot span lines, YAML folds them away, CSV cells and list lines are
  stripped), except a YAML literal block (``|``), which no emanet input uses; and PyYAML refuses a trailing
  tab outright. Blank lines are kept (line numbers stay right); :func:`text_lines` skips them.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

#: Byte-order marks of the encodings refused, longest first (UTF-32 LE starts with UTF-16 LE's mark).
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


class TextFileError(ValueError):
    """A text file that cannot be read as UTF-8; the message names the file, what is wrong and the fix."""


def read_text_file(path: str | Path, error: type[Exception] = TextFileError) -> str:
    """The text of ``path`` decoded as UTF-8: BOM dropped, CRLF and CR turned into LF, trailing blanks removed.

    ``error`` is the exception class raised for a file that is not UTF-8 text (callers pass their own:
    DataError for datasets, ConfigError for params files, FetchError for manifests); its message names
    the file, the problem (first bad byte with line and offset, or the UTF-16/32 byte-order mark, or NUL
    bytes) and the fix ("re-save it as UTF-8", with an ``iconv`` command). A file that does not exist
    raises FileNotFoundError as usual; any other read failure (a folder, no permission) raises ``error``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    else:
        for bom, encoding in _WIDE_BOMS:
            if data.startswith(bom):
                raise error(
                    f"{path}: is {encoding} text (it starts with a {encoding} byte-order mark); emanet "
                    f"reads UTF-8 only: re-save it as UTF-8 ({_iconv(path, encoding)}, or 'Save as', "
                    f"encoding UTF-8, in the editor)"
                )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(
            f"{path}: is not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, byte offset "
            f"{exc.start}{_guess(data)}); re-save it as UTF-8 ({_iconv(path, 'LATIN1')}, naming the "
            f"encoding it was written in)"
        ) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise error(
            f"{path}: holds NUL bytes (first at line {line}): it is UTF-16 text without a byte-order "
            f"mark, or not a text file at all; re-save it as UTF-8 text ({_iconv(path, 'UTF-16LE')})"
        )
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip(" \t") for line in lines)


def text_lines(path: str | Path, error: type[Exception] = TextFileError) -> Iterator[tuple[int, str]]:
    """(line number from 1, line) for every line of ``path`` that is not blank, stripped of surrounding
    whitespace and of stray byte-order marks (files concatenated with ``cat`` keep the later ones)."""
    for number, line in enumerate(read_text_file(path, error).split("\n"), start=1):
        line = line.strip().strip("\ufeff").strip()
        if line:
            yield number, line


def _iconv(path: Path, encoding: str) -> str:
    return f"e.g. `iconv -f {encoding} -t UTF-8 {path.name} > utf8.tmp && mv utf8.tmp {path.name}`"


def _guess(data: bytes) -> str:
    """What a file that fails UTF-8 decoding probably is, for the error message."""
    if b"\x00" in data:
        return "; it holds NUL bytes: UTF-16 text without a byte-order mark, or not a text file"
    if data[:2] in (b"\x1f\x8b", b"PK", b"BZ") or data[:4] in (b"\x89PNG", b"%PDF") or data[:3] == b"\xff\xd8\xff":
        return "; it looks like a binary file (an archive or an image), not text"
    return "; probably Latin-1 or Windows-1252 text"
