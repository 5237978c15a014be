"""Text files from datasets and users, in the encodings and line ends they circulate in (issue 10, part 2).

Every reader of outside text goes through emanet.textfile.read_text_file: a UTF-8 byte-order mark is
dropped, CRLF / CR line ends and trailing blanks are tolerated, and anything that is not UTF-8 (Latin-1,
Windows-1252, UTF-16/32 with or without a byte-order mark, a binary file) is the reader's own error naming
the file and saying to re-save it as UTF-8, never a UnicodeDecodeError.
"""

from __future__ import annotations

import codecs
import gzip
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from emanet.commands.data import _manifest_counts
from emanet.commands.submission import _per_class
from emanet.config import ConfigError, load_params
from emanet.data.archives import catalog
from emanet.data.archives.download import read_manifest
from emanet.data.archives.transfer import FetchError
from emanet.data.convert.prepare import prepare
from emanet.data.convert.sources import extracted
from emanet.data.files import DataError, read_class_file, read_id_list
from emanet.data.layout import read_meta
from emanet.textfile import TextFileError, read_text_file, text_lines

ROOT = Path(__file__).resolve().parents[1]
BOM = codecs.BOM_UTF8

# --- the encodings and line ends users' files come in -------------------------------------------------

#: name -> bytes (UTF-8 text with LF line ends) -> the same text as some editor or tool saves it
LEGITIMATE: dict[str, Callable[[bytes], bytes]] = {
    "utf8_bom": lambda b: BOM + b,
    "crlf": lambda b: b.replace(b"\n", b"\r\n"),
    "bom_and_crlf": lambda b: BOM + b.replace(b"\n", b"\r\n"),
    "lone_cr": lambda b: b.replace(b"\n", b"\r"),
    "trailing_blanks": lambda b: b.replace(b"\n", b" \t\n") + b"\n  \n\t\n",
    "no_final_newline": lambda b: b.rstrip(b"\n"),
}


def _non_ascii(text: str) -> str:
    """The text with a non-ASCII character at the end of its first line (the file is refused before it is
    parsed, so where it goes does not matter)."""
    return text.replace("\n", " \u00e9t\u00e9\n", 1)


#: name -> (text -> bytes in another encoding, what the error must say)
NOT_UTF8: dict[str, tuple[Callable[[str], bytes], str]] = {
    "latin1": (lambda t: _non_ascii(t).encode("latin-1", "replace"), r"is not UTF-8 text \(byte 0xe9 at line 1"),
    "cp1252_quotes": (
        lambda t: t.replace("\n", " \u201cq\u201d\n", 1).encode("cp1252", "replace"),
        r"is not UTF-8 text \(byte 0x93 at line 1",
    ),
    "utf16_with_bom": (lambda t: t.encode("utf-16"), "is UTF-16 text"),
    "utf16be_with_bom": (lambda t: codecs.BOM_UTF16_BE + t.encode("utf-16-be"), "is UTF-16 text"),
    "utf16_without_bom": (lambda t: t.encode("utf-16-le"), "NUL bytes"),
    "utf32_with_bom": (lambda t: t.encode("utf-32"), "is UTF-32 text"),
    "gzip_by_mistake": (lambda t: gzip.compress(t.encode(), mtime=0), "binary file|NUL bytes"),
}


# --- every reader of outside text, with a sample of its file and its own error class ---------------------


def _params_text() -> str:
    return (ROOT / "params.yaml").read_text(encoding="utf-8")


def _manifest_text(synth_dir: Path) -> str:
    return (synth_dir / "manifest.json").read_text(encoding="utf-8")


def _read_meta_file(path: Path):
    return read_meta(path.parent)


READERS = {
    # name: (file name, sample text or a function of synth_dir, reader, error class)
    "id_list": ("val.txt", "2007_000032\n2007_000033\n", read_id_list, DataError),
    "deeplab_list": (
        "train_aug.txt",
        "/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n"
        "/JPEGImages/2007_000033.jpg /SegmentationClassAug/2007_000033.png\n",
        read_id_list,
        DataError,
    ),
    "class_list": ("labels.txt", "0: unlabeled\n1: person\n2: air conditioner\n", read_class_file, DataError),
    "params_yaml": ("params.yaml", None, load_params, ConfigError),
    "download_manifest": ("manifest.json", "manifest", read_manifest, FetchError),
    "prepare_manifest_counts": ("manifest.json", "manifest", lambda p: _manifest_counts(p, "voc"), DataError),
    "meta_json": ("meta.json", "meta", _read_meta_file, DataError),
    "server_per_class_csv": ("server_classes.csv", "class,iou\naeroplane,90.1\nbicycle,41.5\n", _per_class, ValueError),
}


def _sample(name: str, synth_dir: Path, prepared_root: Path) -> str:
    text = READERS[name][1]
    if text is None:
        return _params_text()
    if text == "manifest":
        return _manifest_text(synth_dir)
    if text == "meta":
        return (prepared_root / "voc" / "meta.json").read_text(encoding="utf-8")
    return text


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "input" / READERS[name][0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("form", sorted(LEGITIMATE))
@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_reader_takes_bom_crlf_cr_and_trailing_blanks(tmp_path, synth_dir, prepared_root, reader, form):
    text = _sample(reader, synth_dir, prepared_root)
    read = READERS[reader][2]
    expected = read(_write(tmp_path / "plain", reader, text.encode()))
    assert read(_write(tmp_path, reader, LEGITIMATE[form](text.encode()))) == expected


@pytest.mark.parametrize("encoding", sorted(NOT_UTF8))
@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_reader_refuses_other_encodings_naming_the_file_and_the_fix(
    tmp_path, synth_dir, prepared_root, reader, encoding
):
    encode, what = NOT_UTF8[encoding]
    path = _write(tmp_path, reader, encode(_sample(reader, synth_dir, prepared_root)))
    with pytest.raises(READERS[reader][3], match=what) as caught:
        READERS[reader][2](path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "re-save it as UTF-8" in message, message
    assert not isinstance(caught.value, UnicodeDecodeError)


def test_the_reader_normalises_line_ends_and_drops_only_a_leading_bom(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(BOM + b"a\r\nb\rc\n\xef\xbb\xbfd  \n\n")
    assert read_text_file(path) == "a\nb\nc\n\ufeffd\n\n"
    assert list(text_lines(path)) == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]
    path.write_bytes(b"")
    assert read_text_file(path) == "" and list(text_lines(path)) == []


def test_a_folder_or_a_missing_file_is_reported_not_a_codec_error(tmp_path):
    with pytest.raises(TextFileError, match=f"{tmp_path}: cannot be read"):
        read_text_file(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_text_file(tmp_path / "absent.txt")
    with pytest.raises(ConfigError, match="absent.yaml: params file not found"):
        load_params(tmp_path / "absent.yaml")


def test_the_error_names_the_line_of_the_first_bad_byte(tmp_path):
    path = tmp_path / "names.txt"
    path.write_bytes("0: unlabeled\n1: person\n2: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(
        DataError,
        match=r"names.txt: is not UTF-8 text \(byte 0xe9 at line 3, byte offset 29; "
        r"probably Latin-1 or Windows-1252 text\); re-save it as UTF-8",
    ):
        read_class_file(path)


def test_class_lists_refuse_an_id_given_twice(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes(BOM + b"0: unlabeled\r\n1: person\r\n1: bicycle\r\n")
    with pytest.raises(DataError, match="labels.txt:3: class 1 is listed twice"):
        read_class_file(path)


# --- end to end: the converters with their list and class files re-saved by users -------------------------


def _user_tree(tmp_path: Path, raw_dir: Path, *archives: str) -> Path:
    user = tmp_path / "user"
    for name in archives:
        with tarfile.open(raw_dir / name) as tar:
            tar.extractall(user, filter="data")
    return user


def _resave(path: Path, form: Callable[[bytes], bytes]) -> None:
    path.write_bytes(form(path.read_bytes()))


def _splits(root: Path) -> dict[str, list[str]]:
    return {p.stem: read_id_list(p) for p in sorted((root / "splits").glob("*.txt"))}


def test_voc_and_sbd_lists_with_a_bom_crlf_and_cr_give_the_same_splits(tmp_path, raw_dir):
    reference = prepare("voc", raw_dir, tmp_path / "reference", None, progress=False)
    user = _user_tree(tmp_path, raw_dir, catalog.VOC2012.name, catalog.SBD.name)
    seg = user / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    _resave(seg / "val.txt", LEGITIMATE["utf8_bom"])  # the example: "\ufeff2007_000110" was not found
    _resave(seg / "train.txt", LEGITIMATE["bom_and_crlf"])
    _resave(user / "benchmark_RELEASE/dataset/train.txt", LEGITIMATE["lone_cr"])
    _resave(user / "benchmark_RELEASE/dataset/val.txt", LEGITIMATE["trailing_blanks"])
    root = prepare("voc", user, tmp_path / "out", None, progress=False)
    assert _splits(root) == _splits(reference)
    assert read_meta(root)["label_checksum"] == read_meta(reference)["label_checksum"]


def test_context_labels_txt_and_voc2010_lists_saved_on_windows(tmp_path, raw_dir):
    reference = prepare("context", raw_dir, tmp_path / "reference", None, progress=False)
    annotations = extracted(raw_dir, catalog.CONTEXT_TRAINVAL.name)
    voc2010 = extracted(raw_dir, catalog.VOC2010.name)
    labels = next(annotations.rglob("labels.txt"))
    _resave(labels, LEGITIMATE["bom_and_crlf"])
    _resave(next(voc2010.rglob("ImageSets/Main/train.txt")), LEGITIMATE["utf8_bom"])
    root = prepare("context", raw_dir, tmp_path / "out", None, progress=False)
    assert _splits(root) == _splits(reference) and read_meta(root)["classes"] == read_meta(reference)["classes"]
    labels.write_bytes(labels.read_bytes().decode("utf-8-sig").encode("utf-16"))
    with pytest.raises(DataError, match=f"{labels}: is UTF-16 text.*re-save it as UTF-8"):
        prepare("context", raw_dir, tmp_path / "again", None, progress=False)


def test_cocostuff_image_lists_and_labels_txt_saved_on_windows(tmp_path, raw_dir):
    reference = prepare("cocostuff10k", raw_dir, tmp_path / "reference", None, progress=False)
    lists = next(extracted(raw_dir, catalog.COCOSTUFF10K.name).rglob("imageLists"))
    _resave(lists / "train.txt", LEGITIMATE["bom_and_crlf"])
    _resave(lists / "test.txt", LEGITIMATE["lone_cr"])
    _resave(raw_dir / catalog.COCOSTUFF10K_LABELS.name, LEGITIMATE["utf8_bom"])
    root = prepare("cocostuff10k", raw_dir, tmp_path / "out", None, progress=False)
    assert _splits(root) == _splits(reference) and read_meta(root)["classes"] == read_meta(reference)["classes"]
    (lists / "test.txt").write_bytes((lists / "test.txt").read_bytes().replace(b"\r", b"\r\xe9", 1))
    with pytest.raises(DataError, match=f"{lists / 'test.txt'}: is not UTF-8 text"):
        prepare("cocostuff10k", raw_dir, tmp_path / "again", None, progress=False)


def test_cli_prepare_names_a_latin1_list_file_and_exits_2(tmp_path, raw_dir):
    user = _user_tree(tmp_path, raw_dir, catalog.VOC2012.name)
    shutil.copy(raw_dir / catalog.SBD.name, user)
    val = user / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"
    val.write_bytes(val.read_bytes() + "2007_00011\u00e9\n".encode("latin-1"))
    emanet = str(Path(sys.executable).parent / "emanet")
    done = subprocess.run(
        [
            emanet,
            "prepare",
            "voc",
            "--raw-dir",
            str(user),
            "--out",
            str(tmp_path / "out"),
            "--no-count-check",
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert f"{val}: is not UTF-8 text" in done.stderr and "re-save it as UTF-8" in done.stderr
    assert "Traceback" not in done.stderr and "UnicodeDecodeError" not in done.stderr
    assert not (tmp_path / "out" / "voc").exists()


def test_server_per_class_csv_from_a_spreadsheet(tmp_path):
    path = tmp_path / "server_classes.csv"
    path.write_bytes(BOM + b"class,iou,\r\naeroplane, 90.1 ,\r\n\r\nbicycle,41.5%\r\n")
    assert _per_class(path) == pytest.approx({"aeroplane": 0.901, "bicycle": 0.415})
    path.write_bytes(b"class,iou\naeroplane,90.1,12\n")
    with pytest.raises(ValueError, match=r"server_classes.csv: expected 'class,iou' rows .* line 2 is"):
        _per_class(path)


@pytest.mark.parametrize(
    "rows",
    [
        "aeroplane,nan\n",
        "aeroplane,inf\n",
        "aeroplane,-1\n",
        "aeroplane,100.5\n",
        "aeroplane,80\nbus,70\naeroplane,81\n",
    ],
)
def test_server_per_class_csv_refuses_impossible_scores(tmp_path, rows):
    path = tmp_path / "server_classes.csv"
    path.write_text(rows)
    with pytest.raises(ValueError, match=r"server_classes.csv: .*(0 to 100|listed twice)"):
        _per_class(path)


def test_prepare_manifest_without_the_dataset_is_named(tmp_path, synth_dir):
    path = tmp_path / "manifest.json"
    path.write_bytes(BOM + json.dumps({"files": [], "counts": {"context": {"train": 2}}}).encode())
    with pytest.raises(DataError, match="manifest.json: has no split counts for 'voc'"):
        _manifest_counts(path, "voc")
    assert _manifest_counts(path, "context") == {"train": 2}
