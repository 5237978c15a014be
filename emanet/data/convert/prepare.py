"""``emanet prepare DATASET``: official trees -> ``OUT/DATASET/{images,labels,splits,meta.json}``.

Writes the uniform layout every later stage reads (its contract: :mod:`emanet.data.layout`): the images,
the labels each sample's own reader (:mod:`emanet.data.convert.labels`) turned into train ids, the split
lists and ``meta.json`` (class names in label order, counts per split, the checksum of the label set, how
the data was derived).

The output is built in a temporary sibling folder and renamed into place when complete, under a lock,
so an interrupted prepare leaves nothing a rerun would trust and two prepares at once cannot mix.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from emanet.data import layout
from emanet.data.classes import IGNORE, palette_png
from emanet.data.convert import cocostuff, context, voc
from emanet.data.convert.conversion import Conversion, Sample
from emanet.data.convert.labels import check_values
from emanet.data.convert.official import splits
from emanet.data.convert.sources import drop_stale_extractions
from emanet.data.files import DataError, image_size
from emanet.progress import progress as progress_report

log = logging.getLogger(__name__)

CONVERTERS: dict[str, Callable[[Path], Conversion]] = {
    "voc": voc.convert,
    "voc_test": voc.convert_test,
    "context": context.convert,
    "cocostuff10k": cocostuff.convert_10k,
    "cocostuff164k": cocostuff.convert_164k,
    "coco_voc": cocostuff.convert_coco_voc,
}


def convert_sample(
    sample: Sample, out: Path, num_classes: int, min_pixels: int | None = None
) -> tuple[str | None, str | None]:
    """Write one sample's image and label into ``out``; return (id, md5 of the label file).

    The md5 is None for an image without a label; with ``min_pixels``, an image with at most that many
    pixels of a class other than background and ignore is skipped and its id comes back as None.
    The image and the label are decoded fully once, here: a truncated, empty or corrupt file raises
    DataError naming it, so nothing damaged reaches the prepared layout (and later stages).
    """
    if sample.label is None:
        image_size(sample.image)  # decodes every pixel: the only check a label-less image gets
        _link_image(sample, out)
        return sample.image_id, None
    label = sample.reader(sample.label)
    size = image_size(sample.image)  # decodes every pixel, not only the header
    if label.shape != size:
        raise DataError(
            f"{sample.label}: label is {label.shape[1]}x{label.shape[0]} but its image "
            f"{sample.image} is {size[1]}x{size[0]}"
        )
    check_values(sample.label, label, [*range(num_classes), IGNORE])
    if min_pixels is not None and np.count_nonzero((label != 0) & (label != IGNORE)) <= min_pixels:
        return None, None
    png = palette_png(label)
    layout.label_path(out, sample.image_id).write_bytes(png)
    _link_image(sample, out)
    return sample.image_id, hashlib.md5(png).hexdigest()


def _link_image(sample: Sample, out: Path) -> None:
    image = layout.image_path(out, sample.image_id)
    try:
        os.link(sample.image, image)
    except OSError:
        shutil.copyfile(sample.image, image)


def _convert_star(args: tuple) -> tuple[str | None, str | None]:
    return convert_sample(*args)


def check_counts(conv: Conversion, expected: dict[str, int]) -> None:
    """Raise listing every split whose size differs from ``expected`` (and splits that are absent)."""
    problems = []
    for split, count in expected.items():
        found = len(conv.splits.get(split, []))
        if found != count:
            diff = f"{count - found:,} missing" if found < count else f"{found - count:,} extra"
            problems.append(f"{split} has {found:,} ids, expected {count:,} ({diff})")
    if problems:
        raise DataError(
            f"{conv.dataset}: split counts differ from the expected ones: {'; '.join(problems)}. "
            f"Check the archives (or use --no-count-check for a deliberate subset)."
        )


@contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare(
    dataset: str,
    raw_dir: str | Path,
    out: str | Path,
    expected_counts: dict[str, int] | None,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Convert ``dataset`` once; a complete earlier output (renamed into place) is returned as is."""
    if dataset not in CONVERTERS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {sorted(CONVERTERS)}")
    raw_dir, out = Path(raw_dir), Path(out)
    final = out / dataset
    with _lock(out / f".{dataset}.lock"):
        if layout.is_prepared(final):
            log.info("%s: already prepared", final)
            return final
        if final.exists():  # no meta.json: not ours, or left by an older layout; never trusted
            raise DataError(f"{final}: exists but has no meta.json; remove it to prepare {dataset} again")
        for name in drop_stale_extractions(raw_dir):
            log.info("%s: changed since it was extracted; extracting it again", raw_dir / name)
        conv = CONVERTERS[dataset](raw_dir)
        if set(conv.splits) != set(splits(dataset)):  # what the configuration checks take as the dataset's splits
            raise DataError(
                f"{dataset}: the converter returned the splits {sorted(conv.splits)}, but "
                f"emanet/data/convert/official.py declares {list(splits(dataset))}: make them agree"
            )
        if expected_counts is not None:
            check_counts(conv, expected_counts)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dataset}.", suffix=".tmp", dir=out))
        try:
            _write(conv, tmp, workers, progress, expected_counts is not None)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _minimums(conv: Conversion) -> dict[str, int | None]:
    """id -> its labelled-pixel minimum; None (keep) for an id in any split without one. One pass over
    the splits: COCO has 123k ids, so no per-id search of the split lists."""
    per_id: dict[str, list[int | None]] = defaultdict(list)
    for split, split_ids in conv.splits.items():
        for image_id in split_ids:
            per_id[image_id].append(conv.min_labelled_pixels.get(split))
    return {i: None if None in per_id[i] or not per_id[i] else min(per_id[i]) for i in conv.samples}


def _write(conv: Conversion, tmp: Path, workers: int, progress: bool, counted: bool) -> None:
    layout.make_folders(tmp)
    ids = sorted(conv.samples)
    limits = _minimums(conv)
    jobs = [(conv.samples[i], tmp, len(conv.classes), limits[i]) for i in ids]
    bar = dict(total=len(jobs), desc=f"prepare {conv.dataset}", enabled=progress, unit="images")
    if workers > 1 and len(jobs) >= 64:
        with ProcessPoolExecutor(workers) as pool:
            try:
                outcomes = list(progress_report(pool.map(_convert_star, jobs, chunksize=32), **bar))
            except BaseException:  # a bad file: stop now, not after converting the other 100k images
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    else:
        outcomes = list(progress_report(map(_convert_star, jobs), **bar))
    # Bookkeeping is keyed by the requested ids, never by what came back: an id the filter dropped comes
    # back as (None, None) and must still be known as dropped, whichever position it had in its split.
    dropped = {i for i, (kept_id, _) in zip(ids, outcomes) if kept_id is None}
    digests = {i: md5 for i, (kept_id, md5) in zip(ids, outcomes) if kept_id is not None}
    kept = {split: [i for i in split_ids if i not in dropped] for split, split_ids in conv.splits.items()}
    _check_not_emptied(conv, kept)
    manifest = "".join(f"{digests[i]}  labels/{i}.png\n" for i in ids if digests.get(i))
    layout.write_label_manifest(tmp, manifest)
    for split, split_ids in kept.items():
        layout.write_split(tmp, split, split_ids)
    meta = {
        "dataset": conv.dataset,
        "classes": conv.classes,
        "num_classes": len(conv.classes),
        "ignore_index": IGNORE,
        "counts": {s: len(v) for s, v in kept.items()},
        "label_checksum": hashlib.sha256(manifest.encode()).hexdigest() if manifest else None,
        "label_format": "indexed PNG (VOC palette), uint8 class ids, 255 = ignore",
        "counts_checked": counted,
        "source": conv.source,
        "unlabelled_splits": sorted(
            s for s, v in conv.splits.items() if v and all(conv.samples[i].label is None for i in v)
        ),
    }
    if conv.min_labelled_pixels:
        meta["filtered"] = {
            s: {
                "min_labelled_pixels": n,
                "source_count": len(conv.splits.get(s, [])),
                "removed": len(conv.splits.get(s, [])) - len(kept.get(s, [])),
                "removed_ids": [i for i in conv.splits.get(s, []) if i in dropped],
            }
            for s, n in conv.min_labelled_pixels.items()
        }
    if meta["unlabelled_splits"]:
        meta["image_checksum"] = _image_checksum(tmp, [i for i in ids if i not in dropped])
    layout.write_meta(tmp, meta)


def _check_not_emptied(conv: Conversion, kept: dict[str, list[str]]) -> None:
    """A split that had ids and lost every one of them to ``min_labelled_pixels`` is an error, not an
    empty split: nothing could train on it, and the cause is almost always the wrong label maps."""
    emptied = [s for s, n in conv.min_labelled_pixels.items() if conv.splits.get(s) and not kept[s]]
    if emptied:
        detail = "; ".join(
            f"{s}: all {len(conv.splits[s]):,} images have at most "
            f"{conv.min_labelled_pixels[s]:,} pixels of a class other than background"
            for s in emptied
        )
        raise DataError(
            f"{conv.dataset}: the labelled-pixel filter removed every image of {', '.join(emptied)} "
            f"({detail}). Check that the label maps are the dataset's own ({conv.source.get('route')}); "
            f"nothing was written."
        )


def _image_checksum(root: Path, ids: list[str]) -> str:
    """What identifies a split without labels: the SHA-256 of its images' MD5 list."""
    listing = "".join(f"{hashlib.md5(layout.image_path(root, i).read_bytes()).hexdigest()}  {i}.jpg\n" for i in ids)
    return hashlib.sha256(listing.encode()).hexdigest()
