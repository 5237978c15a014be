"""The Dataset over the prepared layout and the official augmentation, seeded per sample."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from emanet.data.convert.prepare import prepare
from emanet.data.files import DataError
from emanet.data.loading.dataset import SegmentationDataset
from emanet.data.loading.transforms import (
    MEAN,
    STD,
    EvalTransform,
    TrainTransform,
    multiscale_views,
    normalize,
    pad_to_8k1,
)


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory, synth_dir):
    import shutil

    raw = tmp_path_factory.mktemp("raw")
    for name in ("VOCtrainval_11-May-2012.tar", "benchmark.tgz"):
        shutil.copy(synth_dir / name, raw / name)
    return prepare("voc", raw, tmp_path_factory.mktemp("prepared"), None, progress=False)


def _coded_pair(h=40, w=56):
    """An image whose red channel encodes its label, to check that geometry stays aligned."""
    label = torch.randint(0, 21, (h, w), dtype=torch.uint8)
    image = torch.stack([label * 10, torch.full_like(label, 7), torch.zeros_like(label)])
    return image, label


def _decode_label(image: torch.Tensor) -> torch.Tensor:
    red = image[0] * STD[0] + MEAN[0]
    return torch.round(red * 255 / 10).long()


def test_crop_pad_and_flip_keep_image_and_label_aligned():
    image, label = _coded_pair()
    transform = TrainTransform(crop_size=64, scales=(1.0,))
    for seed in range(20):
        out_image, out_label = transform(image, label, torch.Generator().manual_seed(seed))
        assert out_image.shape == (3, 64, 64) and out_label.shape == (64, 64) and out_label.dtype == torch.long
        valid = out_label != 255
        assert torch.equal(_decode_label(out_image)[valid], out_label[valid])
        padded = ~valid
        assert padded.sum() == 64 * 64 - 40 * 56, "pad bottom/right to the crop, label 255"
        assert torch.all(out_image[:, padded] == 0), "image padded with 0, the mean after normalisation"


def test_scale_is_drawn_from_the_discrete_set_and_label_uses_nearest():
    image, label = _coded_pair(40, 40)
    seen = set()
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        _, out_label = TrainTransform(crop_size=200, scales=(0.5, 2.0), flip=False)(image, label, g)
        valid = int((out_label != 255).sum())
        seen.add(valid)
        assert set(out_label.unique().tolist()) <= set(label.unique().tolist()) | {255}
    assert seen == {20 * 20, 80 * 80}


def test_same_seed_same_samples_in_any_number_of_workers(voc_root):
    def batches(workers: int, epoch: int = 0):
        ds = SegmentationDataset(voc_root, "trainaug", TrainTransform(49), seed=3)
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=4, num_workers=workers, shuffle=False)
        return [b for b in loader]

    zero, two = batches(0), batches(2)
    for (xa, ya), (xb, yb) in zip(zero, two, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other_epoch = batches(0, epoch=1)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(zero, other_epoch, strict=True))


def test_eval_samples_are_whole_normalised_images(voc_root):
    ds = SegmentationDataset(voc_root, "val", EvalTransform())
    image, label = ds[0]
    raw_image, raw_label = ds.load(0)
    assert image.shape[-2:] == raw_image.shape[-2:] and torch.equal(label, raw_label.long())
    assert ds.num_classes == 21 and ds.classes[15] == "person"
    torch.testing.assert_close(image, normalize(raw_image))


def test_pad_to_8k_plus_1():
    image, label = torch.ones(3, 500, 375), torch.zeros(500, 375, dtype=torch.long)
    padded, plabel = pad_to_8k1(image, label)
    assert padded.shape[-2:] == (505, 377) and plabel.shape == (505, 377)
    assert torch.all(plabel[500:] == 255) and torch.all(padded[:, 500:] == 0)
    assert pad_to_8k1(torch.ones(3, 505, 377))[0].shape[-2:] == (505, 377)


def test_multiscale_views():
    image = torch.randn(3, 100, 60)
    views = list(multiscale_views(image, (0.5, 1.0, 1.5), flip=True))
    assert [(s, f) for s, f, _, _ in views] == [
        (0.5, False),
        (0.5, True),
        (1.0, False),
        (1.0, True),
        (1.5, False),
        (1.5, True),
    ]
    for scale, _flipped, view, (h, w) in views:
        assert (h, w) == (int(100 * scale + 0.5), int(60 * scale + 0.5))
        assert view.shape[-2] % 8 == 1 and view.shape[-1] % 8 == 1
    assert torch.equal(views[3][2][..., :100, :60], image.flip(-1))


def test_missing_split_or_meta_is_named(voc_root, tmp_path):
    with pytest.raises(DataError, match="splits/test.txt: no split 'test'"):
        SegmentationDataset(voc_root, "test")
    with pytest.raises(DataError, match="meta.json: not found; run `emanet prepare` first"):
        SegmentationDataset(tmp_path, "train")
