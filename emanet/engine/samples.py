"""``samples.npz``: what the report's run figures draw, written by ``emanet evaluate`` beside the metrics.

The report draws a run's predictions and responsibility maps (the paper's Fig. 5) from this file, so it
never builds a model (docs/run-folder.md). The first :data:`IMAGES` images of the evaluated split (the
dataset's id order), each predicted single-scale at the model's own T_eval, in float32 on the evaluation's
device; for a model with an EMA head, the responsibilities Z of the last E-step over the first
:data:`RESPONSIBILITY_IMAGES` of them, for :data:`BASES` of the most used, mutually distinct bases.

Arrays (``i`` = 0..N-1, N = min(IMAGES, images in the split)):

- ``ids`` (N,) str: the image ids; ``classes`` (C,) str: the dataset's class names in label order;
  ``split`` () str: the split they come from; ``labelled`` () bool: whether the split has labels.
- ``image_<i>`` uint8 (H, W, 3): the image as decoded (RGB); ``prediction_<i>`` uint8 (H, W): class ids;
  ``label_<i>`` uint8 (H, W): the ground truth (255 = ignored), only for a labelled split.
- EMA head only: ``bases`` int64 (B,): the chosen bases, most used first; ``responsibilities_<j>``
  float32 (B, H, W), j < min(RESPONSIBILITY_IMAGES, N): Z (0..1) of those bases over image j.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from emanet.data.loading.dataset import SegmentationDataset
from emanet.data.loading.transforms import normalize
from emanet.io import atomic_write_bytes
from emanet.runs.folder import SAMPLES

#: Images predicted (the report's predictions figure shows them all).
IMAGES = 3
#: Images whose responsibility maps are kept (the report's Fig. 5 analogue), and bases per image.
RESPONSIBILITY_IMAGES = 2
BASES = 4


def distinct_bases(maps: torch.Tensor, count: int, alike: float = 0.95) -> list[int]:
    """The most used bases of ``maps`` (K, P) (total responsibility over the P pixels), skipping one whose map
    is nearly a copy (cosine > ``alike``) of one chosen; topped up with the most used skipped ones when fewer
    than ``count`` are distinct."""
    flat = maps.flatten(1)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    chosen: list[int] = []
    order = flat.sum(1).argsort(descending=True).tolist()
    for k in order:
        if all(float(unit[k] @ unit[j]) <= alike for j in chosen):
            chosen.append(k)
        if len(chosen) == count:
            return chosen
    return chosen + [k for k in order if k not in chosen][: count - len(chosen)]


@torch.no_grad()
def samples(model, dataset: SegmentationDataset, device: torch.device) -> dict[str, np.ndarray]:
    """The arrays of ``samples.npz`` (module docstring) for the eval-mode ``model`` on ``device`` over
    ``dataset`` (no transform: uint8 images). Raises DataError naming an image or label that cannot be decoded."""
    from emanet.engine.evaluate import predict, responsibilities

    shown = min(IMAGES, len(dataset))
    arrays: dict[str, np.ndarray] = {
        "ids": np.array([dataset.ids[i] for i in range(shown)], dtype=str),
        "classes": np.array(dataset.classes, dtype=str),
        "split": np.array(dataset.split, dtype=str),
        "labelled": np.array(dataset.labelled),
    }
    maps = []
    ema = next(model.ema_units(), None) is not None
    for i in range(shown):
        if dataset.labelled:
            image, label = dataset.load(i)
            arrays[f"label_{i}"] = label.numpy().astype(np.uint8)
        else:
            image = dataset.load_image(i)
        normalised = normalize(image).to(device)
        arrays[f"image_{i}"] = image.permute(1, 2, 0).numpy().astype(np.uint8)
        arrays[f"prediction_{i}"] = predict(model, normalised, None, False).cpu().numpy().astype(np.uint8)
        if ema and i < RESPONSIBILITY_IMAGES:
            maps.append(responsibilities(model, normalised).float().cpu())
    if maps:
        chosen = distinct_bases(torch.cat([m.flatten(1) for m in maps], dim=1), BASES)
        arrays["bases"] = np.array(chosen, dtype=np.int64)
        for j, m in enumerate(maps):
            arrays[f"responsibilities_{j}"] = m[chosen].numpy().astype(np.float32)
    return arrays


def write_samples(model, dataset: SegmentationDataset, run_dir: Path, device: torch.device) -> Path:
    """Write ``run_dir/samples.npz`` (:data:`emanet.runs.folder.SAMPLES`; :func:`samples`, compressed,
    atomically); return its path."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **samples(model, dataset, device))
    return atomic_write_bytes(Path(run_dir) / SAMPLES, buffer.getvalue())
