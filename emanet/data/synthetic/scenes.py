"""Learnable synthetic scenes: each class a distinct colour and texture on a varied background.

Used by :mod:`emanet.data.synthetic.archives` to fill archives in the official formats. A class's look depends
only on its train id, so a small network can learn the mapping from appearance to class; backgrounds
are low-saturation noise and gradients that no class uses.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np


def class_colour(train_id: int, num_classes: int) -> np.ndarray:
    """A saturated colour per class: hues spread evenly, alternating brightness for neighbours."""
    hue = (train_id * 0.618033988749895) % 1.0 if num_classes > 24 else train_id / max(num_classes, 1)
    value = 0.95 if train_id % 2 == 0 else 0.65
    return np.array(colorsys.hsv_to_rgb(hue, 0.9, value)) * 255.0


def _texture(train_id: int, h: int, w: int) -> np.ndarray:
    """Stripes whose orientation and period depend on the class (horizontal, vertical, diagonal, none)."""
    yy, xx = np.mgrid[0:h, 0:w]
    period = 4 + (train_id // 4) % 3 * 2
    kind = train_id % 4
    coord = (yy, xx, yy + xx, None)[kind]
    if coord is None:
        return np.zeros((h, w))
    return np.where((coord // period) % 2 == 0, 18.0, -18.0)


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A low-saturation gradient with noise: varied, but never a class's saturated colour."""
    base = rng.uniform(70, 180)
    tint = rng.uniform(-15, 15, size=3)
    gy, gx = rng.uniform(-40, 40, size=2)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = gy * yy / h + gx * xx / w
    img = base + ramp[..., None] + tint + rng.normal(0, 10, size=(h, w, 3))
    return img


@dataclass
class Shape:
    """One object: a filled ellipse or rectangle of class ``train_id`` (``value`` written in the label).

    ``look`` = (train id, number of classes) borrows another dataset's appearance for the class: a COCO
    "person" looks like a VOC "person", so pre-training on one helps on the other, as with real data.
    """

    train_id: int
    value: int
    mask: np.ndarray
    look: tuple[int, int] | None = None


def random_mask(rng: np.random.Generator, h: int, w: int, min_frac: float = 0.18, max_frac: float = 0.55) -> np.ndarray:
    """A random ellipse or rectangle covering a sizeable part of an h x w image."""
    bh = int(rng.uniform(min_frac, max_frac) * h) + 2
    bw = int(rng.uniform(min_frac, max_frac) * w) + 2
    top = int(rng.integers(0, max(1, h - bh)))
    left = int(rng.integers(0, max(1, w - bw)))
    yy, xx = np.mgrid[0:h, 0:w]
    if rng.random() < 0.5:
        cy, cx, ry, rx = top + bh / 2, left + bw / 2, bh / 2, bw / 2
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    return (yy >= top) & (yy < top + bh) & (xx >= left) & (xx < left + bw)


def paint(img: np.ndarray, shape: Shape, num_classes: int, rng: np.random.Generator) -> None:
    """Paint a class's colour and texture into ``img`` where ``shape.mask`` is set (in place)."""
    h, w = shape.mask.shape
    look_id, look_classes = shape.look or (shape.train_id, num_classes)
    colour = class_colour(look_id, look_classes) + rng.uniform(-8, 8, size=3)
    layer = colour + _texture(look_id, h, w)[..., None] + rng.normal(0, 6, size=(h, w, 3))
    img[shape.mask] = layer[shape.mask]


def render(
    rng: np.random.Generator, h: int, w: int, shapes: list[Shape], num_classes: int, fill: Shape | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the background (or a full-image ``fill`` class), then the shapes in order.

    Returns the RGB image (uint8), the label map of ``value`` per pixel (0 where nothing was drawn,
    uint16 to hold raw ids up to 459), and the instance map (1..n in drawing order, later shapes on top).
    """
    img = background(rng, h, w)
    label = np.zeros((h, w), dtype=np.uint16)
    inst = np.zeros((h, w), dtype=np.uint8)
    if fill is not None:
        paint(img, fill, num_classes, rng)
        label[fill.mask] = fill.value
    for i, shape in enumerate(shapes, start=1):
        paint(img, shape, num_classes, rng)
        label[shape.mask] = shape.value
        inst[shape.mask] = i
    return np.clip(img, 0, 255).astype(np.uint8), label, inst


def boundary_band(label: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels within ``width`` of a change of label: VOC marks them 255 ("difficult" band)."""
    edge = np.zeros(label.shape, dtype=bool)
    edge[:-1] |= label[:-1] != label[1:]
    edge[1:] |= label[:-1] != label[1:]
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    edge[:, 1:] |= label[:, :-1] != label[:, 1:]
    for _ in range(width - 1):
        grown = edge.copy()
        grown[:-1] |= edge[1:]
        grown[1:] |= edge[:-1]
        grown[:, :-1] |= edge[:, 1:]
        grown[:, 1:] |= edge[:, :-1]
        edge = grown
    return edge
