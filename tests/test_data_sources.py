"""Readers follow the rules users trip on: raw palette indices, list-file variants, class files, .mat."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from PIL import Image

from emanet.data.classes import palette_png, voc_colormap
from emanet.data.convert.labels import check_values, mat_field
from emanet.data.files import DataError, read_class_file, read_id_list, read_index_png
from emanet.data.synthetic.archives import _gtcls


def test_palette_pngs_are_read_as_indices_not_colours(tmp_path):
    label = np.array([[0, 1, 15, 255]], dtype=np.uint8)
    path = tmp_path / "2007_000032.png"
    path.write_bytes(palette_png(label))
    assert Image.open(path).mode == "P"
    assert np.array_equal(read_index_png(path), label)
    assert not np.array_equal(np.array(Image.open(path).convert("L")), label), "convert('L') gives luminance"
    Image.fromarray(label, mode="L").save(tmp_path / "gray.png")
    assert np.array_equal(read_index_png(tmp_path / "gray.png"), label)


def test_rgb_label_pngs_are_refused(tmp_path):
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="rgb.png: label PNG must be palette"):
        read_index_png(tmp_path / "rgb.png")


def test_voc_colormap_matches_the_documented_entries():
    cmap = voc_colormap()
    assert cmap.shape == (256, 3)
    assert tuple(cmap[1]) == (128, 0, 0) and tuple(cmap[15]) == (192, 128, 128) and tuple(cmap[255]) == (224, 224, 192)


@pytest.mark.parametrize(
    "content",
    [
        "2007_000032\n2007_000033\n",
        "2007_000032\r\n2007_000033\r\n",
        "2007_000032\n2007_000033",
        "\n2007_000032\n\n2007_000033\n\n",
        "/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n"
        "/JPEGImages/2007_000033.jpg /SegmentationClassAug/2007_000033.png",
    ],
)
def test_list_files_in_every_circulating_form(tmp_path, content):
    path = tmp_path / "train.txt"
    path.write_bytes(content.encode())
    assert read_id_list(path) == ["2007_000032", "2007_000033"]


def test_class_files_split_on_the_first_colon_space_only(tmp_path):
    path = tmp_path / "33_labels.txt"
    path.write_text("1: aeroplane\n3: air conditioner\n33: ceiling \n4: a: b\n\n")
    assert read_class_file(path) == {1: "aeroplane", 3: "air conditioner", 33: "ceiling", 4: "a: b"}
    path.write_text("aeroplane\n")
    with pytest.raises(DataError, match="33_labels.txt:1: expected '<k>: <name>'"):
        read_class_file(path)


def test_sbd_gtcls_struct_reads_as_documented(tmp_path):
    """Documented layout (docs/datasets.md#sbd-and-trainaug), not verified on an original file."""
    seg = np.array([[0, 0, 3], [3, 3, 0]], dtype=np.uint8)
    path = tmp_path / "2008_000002.mat"
    path.write_bytes(_gtcls(seg))
    raw = scipy.io.loadmat(path)["GTcls"][0, 0]
    assert raw["Boundaries"].shape == (20, 1) and hasattr(raw["Boundaries"][2, 0], "toarray")
    assert np.array_equal(mat_field(path, "GTcls", "Segmentation"), seg)
    with pytest.raises(DataError, match="has no field 'Seg'"):
        mat_field(path, "GTcls", "Seg")
    with pytest.raises(DataError, match="has no variable 'LabelMap'"):
        mat_field(path, "LabelMap")


def test_non_mat_files_are_named(tmp_path):
    path = tmp_path / "broken.mat"
    path.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataError, match="broken.mat: not a readable MATLAB"):
        mat_field(path, "S")


def test_value_check_names_file_and_values(tmp_path):
    with pytest.raises(DataError, match=r"x.png: label values outside the classes: \[21, 38\]"):
        check_values(tmp_path / "x.png", np.array([0, 21, 38, 255]), [*range(21), 255])
