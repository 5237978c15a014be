"""One Dataset over the prepared layout ``ROOT/{images,labels,splits,meta.json}`` (:mod:`emanet.data.layout`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from emanet.data import layout
from emanet.data.files import DataError, decode_image, read_id_list, read_index_png


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch (independent of the loading worker)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint64)[0] >> 1)


class SegmentationDataset(Dataset):
    """(image, label) pairs of one split; ``transform(image, label, generator)`` augments them.

    Images are decoded with Pillow (uint8, RGB; torchvision 0.29 deprecates its own decoders); labels
    are read as raw indices. The transform gets a
    generator seeded from (seed, epoch, index), so the same seed gives the same samples whatever the
    number of DataLoader workers; call :meth:`set_epoch` each epoch for fresh augmentation.
    """

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None, seed: int = 0):
        self.root = Path(root)
        self.meta = layout.read_meta(self.root)
        split_file = layout.split_path(self.root, split)
        if not split_file.is_file():
            raise DataError(f"{split_file}: no split {split!r} (have {sorted(self.meta['counts'])})")
        self.split, self.ids = split, read_id_list(split_file)
        self.transform, self.seed, self.epoch = transform, seed, 0

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def num_classes(self) -> int:
        return self.meta["num_classes"]

    @property
    def labelled(self) -> bool:
        """False for a split whose labels are not public (VOC test): only images can be loaded."""
        return self.split not in self.meta.get("unlabelled_splits", [])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def _fix(self) -> str:
        """What to do about a damaged file of the prepared layout (the end of decode errors)."""
        return (
            f"the prepared copy is damaged: delete {self.root} and run `emanet prepare "
            f"{self.meta.get('dataset', self.root.name)}` again (images are hard links to the raw files: "
            f"if prepare then refuses the original, re-download or re-extract its archive)"
        )

    def load_image(self, index: int) -> torch.Tensor:
        """The uint8 image (3, H, W). Raises DataError naming the file if it cannot be fully decoded."""
        im = decode_image(layout.image_path(self.root, self.ids[index]), self._fix)
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw sample: uint8 image (3, H, W) and uint8 label (H, W). Raises DataError naming the
        file for an image or label that cannot be fully decoded (also inside DataLoader workers)."""
        if not self.labelled:
            raise DataError(f"{self.root}: split {self.split!r} has no labels (images only: use load_image)")
        label = torch.from_numpy(read_index_png(layout.label_path(self.root, self.ids[index]), self._fix))
        return self.load_image(index), label

    def __getitem__(self, index: int):
        """``index`` may be virtual (``epoch * len + i``, as the training sampler yields): it selects
        image ``i`` and seeds its augmentation for that epoch."""
        epoch, local = divmod(index, len(self.ids))
        image, label = self.load(local)
        if self.transform is None:
            return image, label
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch + epoch, local))
        with _one_thread():
            return self.transform(image, label, generator)


@contextmanager
def _one_thread():
    """Run the transform on one thread, as DataLoader workers do: multi-threaded kernels split work
    differently and round differently, so this keeps samples bit-identical in and out of workers."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
