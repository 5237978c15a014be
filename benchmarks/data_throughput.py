"""Data throughput on VOC-sized images: conversion (images/s) and training samples per core.

Run by hand: ``.venv/bin/python benchmarks/data_throughput.py [--images 24] [--samples 60]``.
It writes synthetic VOC + SBD archives with VOC-sized images (334..500 px sides), converts them with
``emanet prepare`` (1 and 2 workers), then times the training pipeline (crop 513, scales 0.5..2.0,
pad, crop, flip, normalise) on one thread against a plain PIL + NumPy pipeline doing the same steps,
in the same process, and prints the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emanet.data.convert.prepare import prepare
from emanet.data.loading.dataset import SegmentationDataset
from emanet.data.loading.transforms import MEAN, STD, TRAIN_SCALES, TrainTransform
from emanet.data.synthetic.archives import synthesize


def pil_sample(root: Path, image_id: str, rng: np.random.Generator, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same steps with Pillow and NumPy only: decode, scale, normalise, pad, crop, flip."""
    image = Image.open(root / "images" / f"{image_id}.jpg").convert("RGB")
    label = Image.open(root / "labels" / f"{image_id}.png")
    scale = TRAIN_SCALES[rng.integers(len(TRAIN_SCALES))]
    size = (int(image.width * scale + 0.5), int(image.height * scale + 0.5))
    image, label = image.resize(size, Image.BILINEAR), label.resize(size, Image.NEAREST)
    x = (np.asarray(image, dtype=np.float32) / 255.0 - MEAN) / STD
    y = np.asarray(label)
    ph, pw = max(crop - x.shape[0], 0), max(crop - x.shape[1], 0)
    x = np.pad(x, ((0, ph), (0, pw), (0, 0)))
    y = np.pad(y, ((0, ph), (0, pw)), constant_values=255)
    top, left = rng.integers(x.shape[0] - crop + 1), rng.integers(x.shape[1] - crop + 1)
    x, y = x[top : top + crop, left : left + crop], y[top : top + crop, left : left + crop]
    if rng.random() < 0.5:
        x, y = x[:, ::-1], y[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), torch.from_numpy(
        np.ascontiguousarray(y)
    ).long()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=24, help="images per split in the synthetic archives")
    parser.add_argument("--samples", type=int, default=60, help="training samples timed per pipeline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize(tmp / "raw", args.images, seed=0, datasets=["voc"], sizes=(334, 500))
        for workers in (1, 2):
            out = tmp / f"prepared{workers}"
            start = time.perf_counter()
            root = prepare("voc", tmp / "raw", out, None, workers=workers, progress=False)
            seconds = time.perf_counter() - start
            n = sum(1 for _ in (root / "labels").iterdir())
            print(
                f"prepare voc, {workers} worker(s): {n} images in {seconds:.2f} s = {n / seconds:.1f} images/s "
                "(first run includes extracting the archives)"
            )
        torch.set_num_threads(1)
        ds = SegmentationDataset(root, "trainaug", TrainTransform(513))
        ids = [ds.ids[i % len(ds)] for i in range(args.samples)]
        start = time.perf_counter()
        for i in range(args.samples):
            ds[i % len(ds)]
        ours = args.samples / (time.perf_counter() - start)
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for image_id in ids:
            pil_sample(root, image_id, rng, 513)
        plain = args.samples / (time.perf_counter() - start)
        print(
            f"training samples per core (crop 513, VOC-sized images): emanet {ours:.1f}/s, "
            f"plain PIL+NumPy {plain:.1f}/s, ratio {ours / plain:.2f}"
        )


if __name__ == "__main__":
    main()
