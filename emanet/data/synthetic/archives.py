"""``emanet synth``: small archives in the exact official formats, for the tiny profile and the tests.

For every archive the paper profile downloads, write one with the official name, folder layout and
file formats (docs/datasets.md): palette PNGs with the VOC colour map and a 255 boundary band, SBD
``GTcls`` structs, Context ``LabelMap`` (459 ids) with its ``labels.txt``, COCO-Stuff-10k ``S`` maps,
164k stuffthingmaps PNGs, and the list files, including the traps users meet (CRLF lists, a list
without its final newline, SBD train ids that are VOC val ids). A manifest (name, size, sha256, and
the split counts) lets ``emanet download`` verify them as it verifies a real catalog entry.
Archives are byte-for-byte reproducible for a given seed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from emanet.data.archives import catalog
from emanet.data.classes import (
    COCO_VOC_IDS,
    COCOSTUFF_LABELS,
    COCOSTUFF_UNUSED,
    CONTEXT59,
    CONTEXT_NUM_RAW,
    palette_png,
)
from emanet.data.synthetic.scenes import Shape, boundary_band, random_mask, render
from emanet.io import atomic_write_bytes, atomic_write_json

MANIFEST = "manifest.json"
_EPOCH = 946684800  # fixed mtime (2000-01-01) so archives are reproducible


class Archive:
    """Files to pack (arcname -> bytes), written deterministically as tar, tar.gz or zip."""

    def __init__(self):
        self.files: dict[str, bytes] = {}

    def add(self, arcname: str, data: bytes) -> None:
        self.files[arcname] = data

    def write(self, path: Path) -> Path:
        buffer = io.BytesIO()
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
                for name in sorted(self.files):
                    zf.writestr(zipfile.ZipInfo(name, (2000, 1, 1, 0, 0, 0)), self.files[name])
        else:
            raw = gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) if path.name.endswith(("gz", "tgz")) else buffer
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for name in sorted(self.files):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = len(self.files[name]), _EPOCH, 0o644
                    tar.addfile(info, io.BytesIO(self.files[name]))
            if raw is not buffer:
                raw.close()
        return atomic_write_bytes(path, buffer.getvalue())


def jpeg(img: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(img).save(out, "JPEG", quality=92)
    return out.getvalue()


def gray_png(label: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(label.astype(np.uint8), mode="L").save(out, "PNG")
    return out.getvalue()


def mat(variables: dict) -> bytes:
    """A MATLAB v5 file; its 116-byte text header carries a fixed date so archives are reproducible."""
    out = io.BytesIO()
    scipy.io.savemat(out, variables, do_compression=True)
    header = b"MATLAB 5.0 MAT-file, Platform: posix, Created on: Sat Jan  1 00:00:00 2000".ljust(116)
    return header + out.getvalue()[116:]


def id_list(ids: list[str], newline: str = "\n", final_newline: bool = True) -> bytes:
    return (newline.join(ids) + (newline if final_newline else "")).encode()


#: (min, max) image side in pixels; small by default so the tiny profile runs on a CPU.
DEFAULT_SIZES = (80, 128)


def _size(rng: np.random.Generator, sizes: tuple[int, int]) -> tuple[int, int]:
    return int(rng.integers(sizes[0], sizes[1] + 1)), int(rng.integers(sizes[0], sizes[1] + 1))


def _objects(rng, h, w, choices: list[int], num_classes: int, to_value=lambda c: c, count=(1, 3)) -> list[Shape]:
    picks = rng.choice(choices, size=int(rng.integers(count[0], count[1] + 1)), replace=False)
    return [Shape(int(c), int(to_value(int(c))), random_mask(rng, h, w)) for c in picks]


# --- PASCAL VOC 2012 + SBD -------------------------------------------------------------------------


def _voc_ids(n: int) -> tuple[list[str], list[str], list[str]]:
    ids = [f"{2007 + k % 5}_{100 + k:06d}" for k in range(3 * n)]
    return sorted(ids[0::3]), sorted(ids[1::3]), sorted(ids[2::3])


def write_voc(out: Path, rng: np.random.Generator, n: int, sizes: tuple[int, int]) -> dict[str, int]:
    """VOCtrainval_11-May-2012.tar and SBD's benchmark.tgz."""
    train, val, sbd_only = _voc_ids(n)
    sbd_train = sorted(train[: n // 2] + val[:2] + sbd_only[: 2 * n // 3])  # SBD train holds VOC val ids
    sbd_val = sorted(train[n // 2 : n // 2 + 2] + sbd_only[2 * n // 3 :] + val[2:3])
    voc, sbd = Archive(), Archive()
    root, sroot = "VOCdevkit/VOC2012", "benchmark_RELEASE/dataset"
    for image_id in sorted(train + val + sbd_only):
        h, w = _size(rng, sizes)
        shapes = _objects(rng, h, w, list(range(1, 21)), 21)
        img, label, inst = render(rng, h, w, shapes, 21)
        data = jpeg(img)
        voc.add(f"{root}/JPEGImages/{image_id}.jpg", data)
        voc.add(f"{root}/Annotations/{image_id}.xml", _voc_xml(image_id, h, w, shapes))
        if image_id in train or image_id in val:
            band = boundary_band(label)
            voc.add(f"{root}/SegmentationClass/{image_id}.png", palette_png(np.where(band, 255, label)))
            voc.add(f"{root}/SegmentationObject/{image_id}.png", palette_png(np.where(band, 255, inst)))
        if image_id in sbd_train or image_id in sbd_val:
            sbd.add(f"{sroot}/img/{image_id}.jpg", data)
            sbd.add(f"{sroot}/cls/{image_id}.mat", _gtcls(label.astype(np.uint8)))
            sbd.add(f"{sroot}/inst/{image_id}.mat", _gtinst(inst, shapes))
    seg = f"{root}/ImageSets/Segmentation"
    voc.add(f"{seg}/train.txt", id_list(train))
    voc.add(f"{seg}/val.txt", id_list(val, newline="\r\n"))  # CRLF copies circulate
    voc.add(f"{seg}/trainval.txt", id_list(sorted(train + val), final_newline=False))
    sbd.add(f"{sroot}/train.txt", id_list(sbd_train))
    sbd.add(f"{sroot}/val.txt", id_list(sbd_val))
    voc.write(out / catalog.VOC2012.name)
    sbd.write(out / catalog.SBD.name)
    return {"train": n, "val": n, "trainval": 2 * n, "trainaug": 2 * n}


def _voc_xml(image_id: str, h: int, w: int, shapes: list[Shape]) -> bytes:
    from emanet.data.classes import VOC_CLASSES

    objects = "".join(f"<object><name>{VOC_CLASSES[s.train_id]}</name></object>" for s in shapes)
    return (
        f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename><size><width>{w}"
        f"</width><height>{h}</height><depth>3</depth></size><segmented>1</segmented>{objects}"
        "</annotation>"
    ).encode()


def _gtcls(seg: np.ndarray) -> bytes:
    """SBD's ``GTcls`` struct: Segmentation, Boundaries (cell of 20 sparse maps), CategoriesPresent."""
    band = boundary_band(seg)
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(1, 21):
        boundaries[k - 1, 0] = scipy.sparse.csc_matrix(band & (seg == k))
    present = np.array(sorted(set(np.unique(seg)) - {0}), dtype=np.uint8).reshape(-1, 1)
    return mat({"GTcls": {"Segmentation": seg, "Boundaries": boundaries, "CategoriesPresent": present}})


def _gtinst(inst: np.ndarray, shapes: list[Shape]) -> bytes:
    boundaries = np.empty((max(len(shapes), 1), 1), dtype=object)
    band = boundary_band(inst)
    for i in range(boundaries.shape[0]):
        boundaries[i, 0] = scipy.sparse.csc_matrix(band & (inst == i + 1))
    categories = np.array([s.train_id for s in shapes], dtype=np.uint8).reshape(-1, 1)
    return mat({"GTinst": {"Segmentation": inst, "Boundaries": boundaries, "Categories": categories}})


# --- VOC 2010 + PASCAL Context ---------------------------------------------------------------------


def context_labels_txt() -> bytes:
    """labels.txt: 459 lines "k: name"; the 59 used ids carry their real names, the rest placeholders."""
    names = {raw: label_name for _, label_name, raw in CONTEXT59}
    names.update({1: "accordion", 3: "air conditioner", 459: "wool"})
    lines = [f"{k}: {names.get(k, f'synthetic-{k}')}" for k in range(1, CONTEXT_NUM_RAW + 1)]
    return ("\n".join(lines) + "\n").encode()


def write_context(out: Path, rng: np.random.Generator, n: int, sizes: tuple[int, int]) -> dict[str, int]:
    """VOCtrainval_03-May-2010.tar and the Context annotations ``trainval.tar.gz``."""
    ids = [f"{2008 + k % 3}_{200 + k:06d}" for k in range(2 * n)]
    train, val = sorted(ids[0::2]), sorted(ids[1::2])
    used = {raw for _, _, raw in CONTEXT59}
    other = [k for k in range(1, CONTEXT_NUM_RAW + 1) if k not in used]
    raw_of = [raw for _, _, raw in CONTEXT59]
    voc, ctx = Archive(), Archive()
    root = "VOCdevkit/VOC2010"
    for image_id in sorted(ids):
        h, w = _size(rng, sizes)
        stuff = int(rng.integers(20, 59))
        fill = Shape(stuff, raw_of[stuff], np.ones((h, w), dtype=bool))
        shapes = _objects(rng, h, w, list(range(20)), 59, lambda c: raw_of[c], (1, 2))
        junk = int(rng.choice(other))  # a class outside the 59: must become 255
        shapes.append(Shape(59 + junk % 5, junk, random_mask(rng, h, w, 0.1, 0.2)))
        img, label, _ = render(rng, h, w, shapes, 64, fill=fill)
        label[:3, :3] = 0  # an unlabeled corner
        voc.add(f"{root}/JPEGImages/{image_id}.jpg", jpeg(img))
        ctx.add(f"trainval/{image_id}.mat", mat({"LabelMap": label.astype(np.uint16)}))
    voc.add(f"{root}/ImageSets/Main/train.txt", id_list(train))
    voc.add(f"{root}/ImageSets/Main/val.txt", id_list(val))
    ctx.add("labels.txt", context_labels_txt())
    voc.write(out / catalog.VOC2010.name)
    ctx.write(out / catalog.CONTEXT_TRAINVAL.name)
    return {"train": n, "val": n}


# --- COCO-Stuff ----------------------------------------------------------------------------------------


def cocostuff_labels_txt() -> bytes:
    lines = ["0: unlabeled"] + [f"{k}: {name}" for k, name in enumerate(COCOSTUFF_LABELS, start=1)]
    return ("\n".join(lines) + "\n").encode()


def _coco_thing(rng: np.random.Generator, h: int, w: int, coco_id: int, train_id: int, min_frac: float = 0.18) -> Shape:
    """A COCO thing; the 20 VOC categories look like their VOC class (see :class:`Shape`)."""
    voc = COCO_VOC_IDS.index(coco_id) + 1 if coco_id in COCO_VOC_IDS else None
    return Shape(train_id, coco_id, random_mask(rng, h, w, min_frac), look=(voc, 21) if voc else None)


def _coco_scene(
    rng: np.random.Generator, sizes: tuple[int, int], voc_thing: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """An image and its labels.txt-id map: a stuff background, 2 things, an unlabeled corner.

    ``voc_thing`` True puts a large thing of a VOC category first, False keeps VOC categories out (an
    image COCO-for-VOC pre-training filters away), None draws both things from all 80.
    """
    used = [k for k in range(1, 183) if k not in COCOSTUFF_UNUSED]
    train_id = {k: i for i, k in enumerate(used)}
    h, w = _size(rng, sizes)
    stuff = int(rng.choice(used[80:]))
    fill = Shape(train_id[stuff], stuff, np.ones((h, w), dtype=bool))
    if voc_thing is None:
        picks = [int(k) for k in rng.choice(used[:80], 2, replace=False)]
        things = [_coco_thing(rng, h, w, k, train_id[k]) for k in picks]
    else:
        others = [k for k in used[:80] if k not in COCO_VOC_IDS]
        first = int(rng.choice(COCO_VOC_IDS if voc_thing else others))
        second = int(rng.choice([k for k in others if k != first]))
        things = [
            _coco_thing(rng, h, w, first, train_id[first], 0.45 if voc_thing else 0.18),
            _coco_thing(rng, h, w, second, train_id[second], 0.1),
        ]
    img, label, _ = render(rng, h, w, things, 171, fill=fill)
    label[-4:, -4:] = 0
    return img, label


def write_cocostuff10k(out: Path, rng: np.random.Generator, n: int, sizes: tuple[int, int]) -> dict[str, int]:
    """cocostuff-10k-v1.1.zip (images, annotations/*.mat with S, imageLists) and cocostuff-labels.txt."""
    ids = [f"COCO_train2014_{100000 + 7 * k:012d}" for k in range(2 * n)]
    train, test = sorted(ids[:n]), sorted(ids[n:])
    names = np.empty((182, 1), dtype=object)
    names[:, 0] = list(COCOSTUFF_LABELS)
    archive = Archive()
    for image_id in sorted(ids):
        img, label = _coco_scene(rng, sizes)
        h, w = label.shape
        regions = (np.arange(h)[:, None] // 16) * ((w + 15) // 16) + np.arange(w)[None, :] // 16 + 1
        region_labels = np.array([np.bincount(label[regions == r]).argmax() for r in range(1, regions.max() + 1)])
        captions = np.empty((5, 1), dtype=object)
        captions[:, 0] = [f"a synthetic scene number {k}" for k in range(5)]
        archive.add(f"images/{image_id}.jpg", jpeg(img))
        archive.add(
            f"annotations/{image_id}.mat",
            mat(
                {
                    "S": label.astype(np.uint16),
                    "names": names,
                    "captions": captions,
                    "regionMapStuff": regions.astype(np.uint16),
                    "regionLabelsStuff": region_labels.reshape(-1, 1),
                }
            ),
        )
    archive.add("imageLists/train.txt", id_list(train))
    archive.add("imageLists/test.txt", id_list(test))
    archive.add("imageLists/all.txt", id_list(sorted(ids)))
    archive.write(out / catalog.COCOSTUFF10K.name)
    atomic_write_bytes(out / catalog.COCOSTUFF10K_LABELS.name, cocostuff_labels_txt())
    return {"train": n, "test": n}


def write_cocostuff164k(out: Path, rng: np.random.Generator, n: int, sizes: tuple[int, int]) -> dict[str, int]:
    """train2017.zip, val2017.zip, stuffthingmaps_trainval2017.zip (grayscale, id-1, 255) and labels.txt.

    train holds 2n images, val n (train is the larger split, as in the release). Three images in four
    show a large object of a VOC category, so the COCO-for-VOC conversion keeps them and drops the rest.
    """
    maps = Archive()
    for split, archive_entry, offset, count in (
        ("train2017", catalog.COCO_TRAIN2017, 9, 2 * n),
        ("val2017", catalog.COCO_VAL2017, 139, n),
    ):
        images = Archive()
        for k in range(count):
            image_id = f"{offset + 31 * k:012d}"
            img, label = _coco_scene(rng, sizes, voc_thing=k % 4 != 3)
            images.add(f"{split}/{image_id}.jpg", jpeg(img))
            maps.add(f"{split}/{image_id}.png", gray_png(np.where(label == 0, 255, label.astype(np.int64) - 1)))
        images.write(out / archive_entry.name)
    maps.write(out / catalog.STUFFTHINGMAPS.name)
    atomic_write_bytes(out / catalog.COCOSTUFF_LABELS.name, cocostuff_labels_txt())
    return {"train": 2 * n, "val": n}


# --- VOC 2012 test (Table 2) -------------------------------------------------------------------------

#: Where synth keeps the labels the evaluation server would keep: ``<out>/server/<dataset>/<id>.png``.
SERVER_DIR = "server"


def write_voc_test(out: Path, rng: np.random.Generator, n: int, sizes: tuple[int, int]) -> dict[str, int]:
    """VOC2012test.tar: JPEGImages (segmentation test images and detection-only ones), the Segmentation
    and Main test lists, no labels. The server's ground truth goes to ``server/voc_test/`` beside the
    archives (not in the manifest, never downloaded): a local stand-in scores submissions with it."""
    ids = [f"{2008 + k % 4}_{500000 + k:06d}" for k in range(n + n // 2)]
    segmentation = sorted(ids[:n])
    archive, root = Archive(), "VOCdevkit/VOC2012"
    server = out / SERVER_DIR / "voc_test"
    for image_id in sorted(ids):
        h, w = _size(rng, sizes)
        shapes = _objects(rng, h, w, list(range(1, 21)), 21)
        img, label, _ = render(rng, h, w, shapes, 21)
        archive.add(f"{root}/JPEGImages/{image_id}.jpg", jpeg(img))
        archive.add(f"{root}/Annotations/{image_id}.xml", _voc_xml(image_id, h, w, []))
        if image_id in segmentation:
            atomic_write_bytes(server / f"{image_id}.png", palette_png(np.where(boundary_band(label), 255, label)))
    archive.add(f"{root}/ImageSets/Segmentation/test.txt", id_list(segmentation))
    archive.add(f"{root}/ImageSets/Main/test.txt", id_list(sorted(ids)))
    archive.write(out / catalog.VOC2012_TEST.name)
    return {"test": n}


WRITERS = {
    "voc": write_voc,
    "context": write_context,
    "cocostuff10k": write_cocostuff10k,
    "cocostuff164k": write_cocostuff164k,
    "voc_test": write_voc_test,
}
#: Datasets converted from another one's archives: their counts are those of the source archives.
SAME_ARCHIVES = {"coco_voc": "cocostuff164k"}


def synthesize(
    out: str | Path,
    images_per_split: int = 12,
    seed: int = 0,
    datasets: list[str] | None = None,
    sizes: tuple[int, int] = DEFAULT_SIZES,
) -> Path:
    """Write every dataset's archives into ``out`` and the manifest that verifies them."""
    if not 16 <= sizes[0] <= sizes[1]:
        raise ValueError(f"image sizes must satisfy 16 <= min <= max, got {sizes}")
    if images_per_split < 4:
        raise ValueError("--images-per-split must be at least 4 (the splits overlap by design)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    wanted = [SAME_ARCHIVES.get(name, name) for name in datasets or list(WRITERS)]
    for name in dict.fromkeys(wanted):
        rng = np.random.default_rng([seed, list(WRITERS).index(name)])
        counts[name] = WRITERS[name](out, rng, images_per_split, sizes)
    counts.update({alias: counts[source] for alias, source in SAME_ARCHIVES.items() if source in counts})
    files = [
        {"name": p.name, "size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in sorted(out.iterdir())
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    ]
    return atomic_write_json(
        out / MANIFEST,
        {
            "generator": "emanet synth",
            "seed": seed,
            "images_per_split": images_per_split,
            "files": files,
            "counts": counts,
        },
    )
