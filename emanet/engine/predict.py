"""``emanet predict``: an experiment's model on any image a user has.

For each input image ``<stem>`` it writes, in the output folder:

* ``<stem>.png``: the class ids at the input's size, a palette PNG in the VOC colour map (the format of
  the prepared labels; ``np.array(Image.open(...))`` reads the ids back);
* ``<stem>_overlay.jpg``: the image blended half and half with the class colours, and beside it a legend
  of the classes present (names from the prepared dataset's ``meta.json``, else VOC's for 21 classes);
* with ``bases``: ``<stem>_basis<k>.png`` for each basis k, the EMA unit's responsibilities Z of that basis
  over the image (the paper's Fig. 5), each scaled to its own maximum, viridis colour map.

Inputs are image files or folders (the images directly inside, by suffix), of any size and mode: JPEG,
PNG, grayscale (8- or 16-bit), palette, CMYK, RGBA (composited on white). A photo's EXIF orientation is
applied first, so it is predicted and shown upright. A file that cannot be read or decoded is reported
by name and skipped; the others are still written.

Inference is :func:`emanet.engine.evaluate.predict`, the code ``emanet evaluate`` scores with:
single-scale (the whole image padded to 8k+1) or multi-scale + flip. One image at a time on
``train.device`` (CPU or CUDA), as evaluation.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps

from emanet.config import Config
from emanet.data.classes import VOC_CLASSES, palette_png, voc_colormap
from emanet.data.files import DataError, decode_image
from emanet.data.loading.transforms import normalize
from emanet.engine import dist as edist
from emanet.engine.evaluate import inference_model, predict, responsibilities
from emanet.io import atomic_write_bytes
from emanet.models import Segmentor
from emanet.models.import_weights import read_foreign
from emanet.models.weights import read_model_weights
from emanet.progress import progress as progress_report
from emanet.runs.folder import MODEL

log = logging.getLogger(__name__)

#: Suffixes taken from a folder (files named on the command line are tried whatever their suffix).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
OVERLAY_ALPHA = 0.5


@dataclass
class PredictResult:
    """What a prediction run did: the images written (input -> output stem) and the failures."""

    written: dict[Path, str] = field(default_factory=dict)
    failed: dict[Path, str] = field(default_factory=dict)


def collect_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], dict[Path, str]]:
    """(image files in order, {path: why not} for inputs that do not exist); folders give the files
    directly inside them whose suffix is an image's (:data:`IMAGE_SUFFIXES`), sorted by name."""
    files: list[Path] = []
    missing: dict[Path, str] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                missing[path] = f"{path}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})"
            files += found
        elif path.exists():
            files.append(path)
        else:
            missing[path] = f"{path}: no such file or folder"
    return list(dict.fromkeys(files)), missing


def output_stems(paths: Sequence[Path]) -> dict[Path, str]:
    """A distinct output name for every input: its stem, or ``<stem>_<suffix>`` (then ``_<n>``) where two
    inputs share a stem (``a/x.jpg`` and ``b/x.png``), so no prediction overwrites another."""
    counts: dict[str, int] = {}
    for path in paths:
        counts[path.stem] = counts.get(path.stem, 0) + 1
    stems: dict[Path, str] = {}
    taken: set[str] = set()
    for path in paths:
        stem = path.stem if counts[path.stem] == 1 else f"{path.stem}_{path.suffix.lstrip('.').lower() or 'file'}"
        unique, n = stem, 1
        while unique in taken:
            n += 1
            unique = f"{stem}_{n}"
        taken.add(unique)
        stems[path] = unique
    return stems


def read_photo(path: Path) -> np.ndarray:
    """The image at ``path`` as uint8 RGB (H, W, 3), upright (EXIF orientation applied).

    Grayscale, palette and CMYK are converted to RGB; 16-bit grayscale is scaled to 8 bits; transparent
    pixels (RGBA, LA, palette or RGB with a transparent colour) are composited on white. Raises DataError
    naming the file if it cannot be read or fully decoded.
    """
    image = decode_image(path, "skipped")
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as exc:  # noqa: BLE001 - a malformed EXIF block must not lose the picture
        log.warning("%s: EXIF orientation unreadable (%s); predicted as stored", path, exc)
    return _to_rgb(image)


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 255.0 if values.max(initial=0) <= 255 else 65535.0 if values.max() <= 65535 else values.max()
        gray = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        image = background
    return np.array(image.convert("RGB"), dtype=np.uint8)


def class_names(cfg: Config, num_classes: int) -> list[str]:
    """Names of the classifier's classes: the prepared training dataset's (``meta.json``) when it has as
    many classes, else VOC's for 21 classes, else ``class <i>``."""
    from emanet.data.layout import is_prepared, read_meta
    from emanet.engine.train import dataset_root

    if is_prepared(dataset_root(cfg)):
        classes = read_meta(dataset_root(cfg))["classes"]
        if len(classes) == num_classes:
            return list(classes)
        log.warning(
            "%s: %d classes, the weights have %d: classes are shown by number",
            dataset_root(cfg) / "meta.json",
            len(classes),
            num_classes,
        )
    if num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return [f"class {i}" for i in range(num_classes)]


def load_model(
    cfg: Config, run_dir: Path, device: torch.device, weights: Path | None = None, format: str = "auto"
) -> Segmentor:
    """The experiment's network with the run's ``model.pt``, or with ``weights`` (any layout
    `emanet import-weights` reads, detected the same way); the classifier gives the number of classes."""
    if weights is not None:
        foreign = read_foreign(weights, format)
        return inference_model(cfg, foreign.state, foreign.num_classes, device, weights, foreign=True)
    path = run_dir / MODEL
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no trained or imported model; run `emanet train` or `emanet import-weights "
            f"FILE --experiment {cfg.experiment}` first, or pass --weights FILE"
        )
    state = read_model_weights(path)
    classifier = state.get("head.classifier.weight")
    if classifier is None:
        raise ValueError(f"{path}: has no head.classifier.weight; it is not a whole segmentation model")
    return inference_model(cfg, state, int(classifier.shape[0]), device, path)


def check_bases(model: Segmentor, bases: Sequence[int]) -> None:
    """Raise ValueError unless every basis index exists in the model's EMA unit."""
    if not bases:
        return
    unit = next(model.ema_units(), None)
    if unit is None:
        raise ValueError("--bases: this experiment's model has no EMA unit (model.head is not ema)")
    bad = [k for k in bases if not 0 <= k < unit.num_bases]
    if bad:
        raise ValueError(
            f"--bases: {bad[0]} is not a basis of the EMA unit (K = {unit.num_bases}: 0..{unit.num_bases - 1})"
        )


def overlay(rgb: np.ndarray, pred: np.ndarray, names: Sequence[str]) -> Image.Image:
    """The image blended with the class colours, and a legend of the classes present on its right."""
    colours = voc_colormap()
    blended = rgb.astype(np.float32) * (1 - OVERLAY_ALPHA) + colours[pred].astype(np.float32) * OVERLAY_ALPHA
    picture = Image.fromarray(np.rint(blended).astype(np.uint8), "RGB")
    present = [int(c) for c in np.unique(pred)]
    h, w = pred.shape
    size = max(12, min(48, max(h, w) // 40))
    try:
        font = ImageFont.load_default(size=size)
    except (OSError, ImportError, TypeError):  # Pillow built without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    labels = [f"{c} {names[c] if c < len(names) else 'class ' + str(c)}" for c in present]
    measure = ImageDraw.Draw(picture)
    pad, row = size // 2, int(size * 1.5)
    width = pad * 3 + size + int(max(measure.textlength(text, font=font) for text in labels))
    canvas = Image.new("RGB", (w + width, max(h, 2 * pad + row * len(labels))), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (c, text) in enumerate(zip(present, labels)):
        top = pad + i * row
        draw.rectangle(
            [w + pad, top, w + pad + size, top + size], fill=tuple(int(v) for v in colours[c]), outline=(0, 0, 0)
        )
        draw.text((w + 2 * pad + size, top), text, fill=(0, 0, 0), font=font)
    return canvas


def basis_map(values: torch.Tensor) -> Image.Image:
    """One basis's responsibilities (H, W), scaled to their maximum, in the viridis colour map."""
    from matplotlib import colormaps

    scaled = (values / values.max().clamp_min(1e-12)).cpu().numpy()
    return Image.fromarray((colormaps["viridis"](scaled)[..., :3] * 255).round().astype(np.uint8), "RGB")


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def predict_images(
    cfg: Config,
    run_dir: Path,
    inputs: Sequence[str | Path],
    out_dir: Path,
    weights: Path | None = None,
    format: str = "auto",
    scales: Sequence[float] | None = None,
    flip: bool = False,
    bases: Sequence[int] = (),
    progress: bool = True,
) -> PredictResult:
    """Predict every input image into ``out_dir`` (module docstring); return what was written and failed.

    ``scales`` (None: single-scale) and ``flip`` are :func:`emanet.engine.evaluate.predict`'s. Errors of
    the model or the options (no weights, weights that do not fit, a basis that does not exist) raise
    before any image is read; an image that cannot be read is recorded in ``failed`` and skipped.
    """
    if cfg.train.cpu_threads > 0:
        torch.set_num_threads(cfg.train.cpu_threads)
    device = edist.resolve_device(cfg.train.device)
    model = load_model(cfg, Path(run_dir), device, weights, format)
    check_bases(model, bases)
    names = class_names(cfg, model.head.classifier.out_channels)
    paths, missing = collect_inputs(inputs)
    result = PredictResult(failed=missing)
    for message in missing.values():
        print(f"emanet: {message}", file=sys.stderr)
    stems = output_stems(paths)
    out_dir = Path(out_dir)
    bar = progress_report(paths, desc="predict", unit="images", enabled=progress)
    for path in bar:
        try:
            rgb = read_photo(path)
        except DataError as exc:
            result.failed[path] = str(exc)
            bar.write(f"emanet: {exc}")
            continue
        image = normalize(torch.from_numpy(rgb).permute(2, 0, 1).contiguous()).to(device)
        pred = predict(model, image, scales, flip).cpu().numpy().astype(np.uint8)
        stem = stems[path]
        atomic_write_bytes(out_dir / f"{stem}.png", palette_png(pred))
        atomic_write_bytes(out_dir / f"{stem}_overlay.jpg", _encoded(overlay(rgb, pred, names), "JPEG", quality=90))
        if bases:
            maps = responsibilities(model, image)
            for k in bases:
                atomic_write_bytes(out_dir / f"{stem}_basis{k}.png", _encoded(basis_map(maps[k]), "PNG"))
        result.written[path] = stem
    return result
