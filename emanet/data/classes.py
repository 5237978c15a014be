"""Class lists, label mappings and the VOC colour map (docs/datasets.md: each dataset's classes and labels)."""

from __future__ import annotations

import numpy as np

IGNORE = 255

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

#: PASCAL Context-59 in the official 59-class order: (name, name in labels.txt, id in the 459 space).
CONTEXT59 = (
    ("aeroplane", "aeroplane", 2),
    ("bicycle", "bicycle", 23),
    ("bird", "bird", 25),
    ("boat", "boat", 31),
    ("bottle", "bottle", 34),
    ("bus", "bus", 45),
    ("car", "car", 59),
    ("cat", "cat", 65),
    ("chair", "chair", 72),
    ("cow", "cow", 98),
    ("diningtable", "table", 397),
    ("dog", "dog", 113),
    ("horse", "horse", 207),
    ("motorbike", "motorbike", 258),
    ("person", "person", 284),
    ("pottedplant", "pottedplant", 308),
    ("sheep", "sheep", 347),
    ("sofa", "sofa", 368),
    ("train", "train", 416),
    ("tvmonitor", "tvmonitor", 427),
    ("bag", "bag", 9),
    ("bed", "bed", 18),
    ("bench", "bench", 22),
    ("book", "book", 33),
    ("building", "building", 44),
    ("cabinet", "cabinet", 46),
    ("ceiling", "ceiling", 68),
    ("clothes", "cloth", 80),
    ("computer", "computer", 85),
    ("cup", "cup", 104),
    ("door", "door", 115),
    ("fence", "fence", 144),
    ("floor", "floor", 158),
    ("flower", "flower", 159),
    ("food", "food", 162),
    ("grass", "grass", 187),
    ("ground", "ground", 189),
    ("keyboard", "keyboard", 220),
    ("light", "light", 232),
    ("mountain", "mountain", 259),
    ("mouse", "mouse", 260),
    ("curtain", "curtain", 105),
    ("platform", "platform", 296),
    ("sign", "sign", 355),
    ("plate", "plate", 295),
    ("road", "road", 324),
    ("rock", "rock", 326),
    ("shelves", "shelves", 349),
    ("sidewalk", "sidewalk", 354),
    ("sky", "sky", 360),
    ("snow", "snow", 366),
    ("bedcloth", "bedclothes", 19),
    ("track", "track", 415),
    ("tree", "tree", 420),
    ("truck", "truck", 424),
    ("wall", "wall", 440),
    ("water", "water", 445),
    ("window", "window", 454),
    ("wood", "wood", 458),
)
CONTEXT_NUM_RAW = 459

#: COCO-Stuff ``labels.txt`` ids 1..182 (0 is "unlabeled"); things 1..91, stuff 92..182.
COCOSTUFF_LABELS = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "street sign",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "hat",
    "backpack",
    "umbrella",
    "shoe",
    "eye glasses",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "plate",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "mirror",
    "dining table",
    "window",
    "desk",
    "toilet",
    "door",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "blender",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
    "hair brush",
    "banner",
    "blanket",
    "branch",
    "bridge",
    "building-other",
    "bush",
    "cabinet",
    "cage",
    "cardboard",
    "carpet",
    "ceiling-other",
    "ceiling-tile",
    "cloth",
    "clothes",
    "clouds",
    "counter",
    "cupboard",
    "curtain",
    "desk-stuff",
    "dirt",
    "door-stuff",
    "fence",
    "floor-marble",
    "floor-other",
    "floor-stone",
    "floor-tile",
    "floor-wood",
    "flower",
    "fog",
    "food-other",
    "fruit",
    "furniture-other",
    "grass",
    "gravel",
    "ground-other",
    "hill",
    "house",
    "leaves",
    "light",
    "mat",
    "metal",
    "mirror-stuff",
    "moss",
    "mountain",
    "mud",
    "napkin",
    "net",
    "paper",
    "pavement",
    "pillow",
    "plant-other",
    "plastic",
    "platform",
    "playingfield",
    "railing",
    "railroad",
    "river",
    "road",
    "rock",
    "roof",
    "rug",
    "salad",
    "sand",
    "sea",
    "shelf",
    "sky-other",
    "skyscraper",
    "snow",
    "solid-other",
    "stairs",
    "stone",
    "straw",
    "structural-other",
    "table",
    "tent",
    "textile-other",
    "towel",
    "tree",
    "vegetable",
    "wall-brick",
    "wall-concrete",
    "wall-other",
    "wall-panel",
    "wall-stone",
    "wall-tile",
    "wall-wood",
    "water-other",
    "waterdrops",
    "window-blind",
    "window-other",
    "wood",
)
#: The 11 COCO thing ids (labels.txt numbering) that have no annotations and are dropped.
COCOSTUFF_UNUSED = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)


def voc_colormap(n: int = 256) -> np.ndarray:
    """The standard VOC palette: bits of the class index spread over R, G, B from the top bit down."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for c in range(n):
        r = g = b = 0
        idx = c
        for j in range(8):
            r |= ((idx >> 0) & 1) << (7 - j)
            g |= ((idx >> 1) & 1) << (7 - j)
            b |= ((idx >> 2) & 1) << (7 - j)
            idx >>= 3
        cmap[c] = (r, g, b)
    return cmap


def palette_png(label: np.ndarray) -> bytes:
    """An indexed PNG of uint8 class ids with the 256-entry VOC palette: VOC's own label format, and the
    canonical label file of the prepared layout (viewable, and read back as indices)."""
    import io

    from PIL import Image

    image = Image.fromarray(label.astype(np.uint8), mode="P")
    image.putpalette(voc_colormap().flatten().tolist())
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def cocostuff_lut(first_id: int) -> np.ndarray:
    """Lookup table from raw COCO-Stuff values to the 171 train ids (0..170), everything else 255.

    ``first_id`` is the raw value of "person": 1 for 10k v1.1 (0 = unlabeled), 0 for 164k (255 =
    unlabeled). The 11 unused ids map to 255.
    """
    lut = np.full(256, IGNORE, dtype=np.uint8)
    used = [k for k in range(1, 183) if k not in COCOSTUFF_UNUSED]
    for train_id, label_id in enumerate(used):
        lut[label_id - 1 + first_id] = train_id
    return lut


def cocostuff_class_names() -> list[str]:
    return [name for k, name in enumerate(COCOSTUFF_LABELS, start=1) if k not in COCOSTUFF_UNUSED]


def context59_lut() -> np.ndarray:
    """Lookup table from the 459 Context ids (uint16 LabelMap values) to 0..58, everything else 255."""
    lut = np.full(CONTEXT_NUM_RAW + 1, IGNORE, dtype=np.uint8)
    for train_id, (_, _, raw) in enumerate(CONTEXT59):
        lut[raw] = train_id
    return lut


#: COCO ``labels.txt`` ids of the 20 VOC classes, in VOC order (aeroplane = airplane 5, ..., tvmonitor = tv
#: 72): the categories torchvision's ``references/segmentation/coco_utils.py`` keeps for VOC pre-training.
COCO_VOC_IDS = (5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)


def coco_voc_lut() -> np.ndarray:
    """Lookup table from 164k stuffthingmaps values (labels.txt id - 1, 255 unlabeled) to VOC's 21 ids.

    The 20 VOC categories get their VOC id; every other thing and all stuff are background (0), as in
    torchvision's mapping; unlabeled pixels stay 255 (torchvision, drawing polygons, would call them
    background, but stuffthingmaps leave them unlabeled for a reason: they may hold unannotated things).
    """
    lut = np.zeros(256, dtype=np.uint8)
    for voc_id, coco_id in enumerate(COCO_VOC_IDS, start=1):
        lut[coco_id - 1] = voc_id
    lut[IGNORE] = IGNORE
    return lut
