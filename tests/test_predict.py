"""`emanet predict` on the images users have: mixed sizes and modes, EXIF-rotated photos, broken files."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from emanet.config import load_params, resolve
from emanet.data.loading.transforms import normalize, pad_to_8k1
from emanet.engine.evaluate import predict, responsibilities
from emanet.engine.predict import class_names, output_stems, predict_images, read_photo
from emanet.models import build_model, official
from tests.conftest import ROOT

PARAMS = load_params(ROOT / "params.yaml")


@pytest.fixture
def cfg(tmp_path):
    return resolve(PARAMS, "tiny", ["tracking.enabled=false", f"data.root={tmp_path / 'no-data'}"], "ema512")


@pytest.fixture
def run_dir(tmp_path, cfg) -> Path:
    """A run folder whose model.pt is a (randomly initialised) tiny ema512."""
    torch.manual_seed(3)
    folder = tmp_path / "runs" / "ema512"
    folder.mkdir(parents=True)
    torch.save(build_model(cfg.model, 21).state_dict(), folder / "model.pt")
    return folder


def _jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def mixed_folder(folder: Path) -> dict[str, tuple[int, int]]:
    """Images of every kind users have, and the upright (width, height) each prediction must have."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(folder / "a_rgb.jpg")
    Image.fromarray(rng.integers(0, 256, (50, 40), dtype=np.uint8), "L").save(folder / "b_gray.png")
    Image.fromarray((rng.integers(0, 65536, (33, 47))).astype(np.uint16)).save(folder / "c_gray16.png")
    Image.new("RGB", (64, 60), (200, 30, 30)).convert("CMYK").save(folder / "d_cmyk.jpg")
    rgba = rng.integers(0, 256, (45, 52, 4), dtype=np.uint8)
    rgba[:, :20, 3] = 0
    Image.fromarray(rgba, "RGBA").save(folder / "e_rgba.png")
    palette = Image.fromarray(rng.integers(0, 8, (30, 81), dtype=np.uint8), "P")
    palette.putpalette([v % 256 for v in range(0, 8 * 3 * 31, 31)])
    palette.save(folder / "f_palette.png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; show rotated 90 degrees clockwise
    (folder / "g_exif.jpg").write_bytes(
        _jpeg(Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)), exif=exif)
    )
    whole = _jpeg(Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)))
    (folder / "h_truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "i_garbage.png").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (folder / "notes.txt").write_text("not an image: left alone")
    return {
        "a_rgb": (90, 70),
        "b_gray": (40, 50),
        "c_gray16": (47, 33),
        "d_cmyk": (64, 60),
        "e_rgba": (52, 45),
        "f_palette": (81, 30),
        "g_exif": (40, 60),
    }


def test_predict_on_a_folder_of_mixed_images(tmp_path, cfg, run_dir):
    sizes = mixed_folder(tmp_path / "photos")
    out = tmp_path / "pred"
    result = predict_images(cfg, run_dir, [tmp_path / "photos"], out, progress=False)
    assert sorted(result.written.values()) == sorted(sizes)
    assert sorted(p.name for p in result.failed) == ["h_truncated.jpg", "i_garbage.png"]
    assert all(str(path) in message for path, message in result.failed.items())
    for stem, size in sizes.items():
        with Image.open(out / f"{stem}.png") as label:
            assert label.mode == "P" and label.size == size, stem
            assert np.array(label).max() < 21
        with Image.open(out / f"{stem}_overlay.jpg") as shown:
            assert shown.width > size[0] and shown.height >= size[1], stem  # the legend on the right
    assert not list(out.glob("h_truncated*")) and not list(out.glob("notes*"))


def test_each_kind_of_image_is_read_upright_in_rgb(tmp_path):
    mixed_folder(tmp_path / "photos")
    photo = lambda name: read_photo(tmp_path / "photos" / name)  # noqa: E731
    assert photo("g_exif.jpg").shape == (60, 40, 3)  # EXIF orientation applied
    assert photo("b_gray.png").shape == (50, 40, 3)
    cmyk = photo("d_cmyk.jpg")
    assert np.abs(cmyk.astype(int) - (200, 30, 30)).max() <= 8  # CMYK converted back to its colour
    rgba = photo("e_rgba.png")
    assert (rgba[:, :20] == 255).all()  # transparent pixels on white
    with Image.open(tmp_path / "photos" / "c_gray16.png") as im:
        raw = np.array(im).astype(np.float64)
    assert np.abs(photo("c_gray16.png")[..., 0] - raw * 255 / 65535).max() <= 0.5  # 16 bits scaled to 8


def test_an_exif_rotated_photo_is_predicted_upright(tmp_path, cfg, run_dir):
    """The prediction of a photo stored sideways with an orientation tag equals that of the upright pixels."""
    rng = np.random.default_rng(1)
    upright = rng.integers(0, 256, (57, 38, 3), dtype=np.uint8)
    stored = np.rot90(upright, k=1).copy()  # orientation 6 = rotate the stored image 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(stored).save(photos / "sideways.png", exif=exif)
    Image.fromarray(upright).save(photos / "upright.png")
    out = tmp_path / "pred"
    predict_images(cfg, run_dir, [photos], out, progress=False)
    assert np.array_equal(np.array(Image.open(out / "sideways.png")), np.array(Image.open(out / "upright.png")))


@pytest.mark.parametrize("scales, flip", [(None, False), ([0.75, 1.25], True)])
def test_predictions_are_evaluates_code(tmp_path, cfg, run_dir, scales, flip):
    from emanet.engine.evaluate import load_trained

    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (41, 67, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    predict_images(cfg, run_dir, [tmp_path / "x.png"], tmp_path / "pred", scales=scales, flip=flip, progress=False)
    model = load_trained(cfg, run_dir, 21, torch.device("cpu"))
    expected = predict(model, normalize(torch.from_numpy(rgb).permute(2, 0, 1)), scales, flip)
    assert np.array_equal(np.array(Image.open(tmp_path / "pred" / "x.png")), expected.numpy())


def test_bases_maps_are_the_units_responsibilities(tmp_path, cfg, run_dir):
    from emanet.engine.evaluate import load_trained

    model = load_trained(cfg, run_dir, 21, torch.device("cpu"))
    image = torch.randn(3, 45, 62)
    maps = responsibilities(model, image)
    assert maps.shape == (cfg.model.ema.num_bases, 45, 62)
    torch.testing.assert_close(maps.sum(0), torch.ones(45, 62))
    with torch.no_grad():  # Z straight from the unit, on the feature grid of the padded image
        feats = model.head.fc0(model.backbone(pad_to_8k1(image)[0][None]))
        unit = model.head.block
        b, c, h, w = feats.shape
        z, _ = unit.em(F.conv2d(feats, unit.conv_in.weight, unit.conv_in.bias).view(b, c, h * w))
    grid = z[0].T.reshape(-1, h, w)
    rows, cols = range(0, 45, 8), range(0, 62, 8)  # feature i sits on pixel 8i (align_corners)
    torch.testing.assert_close(maps[:, ::8, ::8], grid[:, : len(rows), : len(cols)], atol=1e-5, rtol=1e-4)

    Image.fromarray(np.zeros((45, 62, 3), np.uint8)).save(tmp_path / "x.jpg")
    predict_images(cfg, run_dir, [tmp_path / "x.jpg"], tmp_path / "pred", bases=[0, 5], progress=False)
    for k in (0, 5):
        assert Image.open(tmp_path / "pred" / f"x_basis{k}.png").size == (62, 45)


def test_the_cli_reports_broken_files_by_name_and_exits_non_zero(tmp_path, cfg, run_dir, capsys):
    from emanet.cli import main

    mixed_folder(tmp_path / "photos")
    base = [
        "predict",
        "--experiment",
        "ema512",
        "--profile",
        "tiny",
        "--results",
        str(tmp_path),
        "--set",
        "tracking.enabled=false",
        "--out",
        str(tmp_path / "pred"),
        "--quiet",
    ]
    assert main([*base, str(tmp_path / "photos"), str(tmp_path / "missing.jpg")]) == 1
    captured = capsys.readouterr()
    assert "7 image(s) predicted" in captured.out
    for name in ("h_truncated.jpg", "i_garbage.png", "missing.jpg"):
        assert name in captured.out and name in captured.err
    assert "Traceback" not in captured.err
    assert main([*base, "--bases", "0,64", str(tmp_path / "photos" / "a_rgb.jpg")]) == 2
    assert "--bases: 64 is not a basis of the EMA unit (K = 64: 0..63)" in capsys.readouterr().err
    assert main([*base, "--results", str(tmp_path / "elsewhere"), str(tmp_path / "photos")]) == 2
    assert "no trained or imported model" in capsys.readouterr().err


def test_weights_of_any_imported_layout_are_used_directly(tmp_path, cfg, run_dir):
    """--weights takes the official layout as import-weights does; the predictions equal the run's."""
    state = torch.load(run_dir / "model.pt", weights_only=True)
    official_file = tmp_path / "latest.pth"
    torch.save({"net": {f"module.{official.to_official(k)}": v for k, v in state.items()}, "step": 1}, official_file)
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (33, 50, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    predict_images(cfg, run_dir, [tmp_path / "x.png"], tmp_path / "a", progress=False)
    predict_images(
        cfg, tmp_path / "nowhere", [tmp_path / "x.png"], tmp_path / "b", weights=official_file, progress=False
    )
    assert (tmp_path / "a" / "x.png").read_bytes() == (tmp_path / "b" / "x.png").read_bytes()


def test_output_names_never_collide():
    stems = output_stems([Path("a/x.jpg"), Path("b/x.png"), Path("c/x.png"), Path("y.jpg")])
    assert list(stems.values()) == ["x_jpg", "x_png", "x_png_2", "y"]


def test_class_names_come_from_the_prepared_dataset_or_voc(prepared_root, cfg):
    from emanet.data.classes import VOC_CLASSES

    with_data = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(prepared_root)))
    assert class_names(with_data, 21) == list(VOC_CLASSES)
    assert class_names(cfg, 21) == list(VOC_CLASSES)  # no prepared data: VOC's names for 21 classes
    assert class_names(with_data, 5) == [f"class {i}" for i in range(5)]
