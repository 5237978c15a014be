"""Load ImageNet checkpoints into a backbone, strictly and with clear reports.

The official code loads with ``strict=False``, which silently hid key mismatches from its users
(EMANet#9). Here every key is accounted for: the classifier (``fc.*``) is the only thing a checkpoint
may carry that the backbone lacks, BatchNorm's ``num_batches_tracked`` the only thing it may lack, and
a tensor whose shape does not fit is refused with its key named.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Prefixes that training wrappers (DataParallel, DDP, our own Segmentor) put before backbone keys.
_WRAPPER_PREFIXES = ("module.", "backbone.")
#: Containers that checkpoints commonly nest their state dict in.
_NESTING_KEYS = ("state_dict", "model", "net")


class WeightLoadError(ValueError):
    """A checkpoint that does not fit the backbone; the message names the file and the key."""


@dataclass
class LoadReport:
    """What happened to each key: loaded, ignored (classifier), missing, unexpected."""

    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded", f"{len(self.ignored)} classifier keys ignored"]
        if self.missing:
            parts.append(f"missing: {', '.join(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected: {', '.join(self.unexpected)}")
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely (``weights_only=True``) and unwrap common nestings/prefixes."""
    path = Path(path)
    if not path.is_file():
        raise WeightLoadError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe pickles
        raise WeightLoadError(f"{path}: not a readable weights-only PyTorch checkpoint ({exc})") from exc
    for key in _NESTING_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightLoadError(f"{path}: expected a state dict of tensors")
    return {_strip_prefixes(k): v for k, v in obj.items()}


def load_model_weights(model: nn.Module, path: str | Path) -> None:
    """A whole model's state dict (a run's ``model.pt``: backbone, head, EMA bases), strictly."""
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except RuntimeError as exc:
        raise WeightLoadError(f"{path}: does not fit the configured model ({exc})") from None


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def load_backbone_weights(backbone: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Copy a checkpoint's tensors into ``backbone``; raise on any mismatch unless ``strict=False``.

    Shape mismatches are always an error. With ``strict=False`` missing and unexpected keys are logged
    as warnings instead of raised, for deliberate partial loads.
    """
    source = read_state_dict(path)
    target = backbone.state_dict()
    report = LoadReport()
    mismatched = []
    for key, tensor in source.items():
        if key.startswith("fc."):
            report.ignored.append(key)
        elif key not in target:
            report.unexpected.append(key)
        elif tensor.shape != target[key].shape:
            mismatched.append(f"key {key!r} has shape {tuple(tensor.shape)} in the checkpoint "
                              f"but {tuple(target[key].shape)} in the model")
        else:
            report.loaded.append(key)
    report.missing = [k for k in target if k not in source and not k.endswith("num_batches_tracked")]
    if (report.missing or report.unexpected) and strict:
        raise WeightLoadError(f"{path}: checkpoint does not match the {type(backbone).__name__}: "
                              f"{report.summary()}{_stem_hint(source, target)}")
    if mismatched:
        raise WeightLoadError(f"{path}: {mismatched[0]}" + (f" (and {len(mismatched) - 1} more)"
                                                             if len(mismatched) > 1 else ""))
    if report.missing or report.unexpected:
        log.warning("%s: partial load: %s", path, report.summary())
    backbone.load_state_dict({k: source[k] for k in report.loaded}, strict=False)
    log.info("%s: %s", path, report.summary())
    return report


def _stem_hint(source: dict, target: dict) -> str:
    """Say which stem the checkpoint was made for when it is the other one."""
    if "conv1.weight" in source and "conv1.0.weight" in target:
        return ". This is a torchvision-style checkpoint (7x7 stem): set model.stem: torchvision"
    if "conv1.0.weight" in source and "conv1.weight" in target:
        return ". This is a deep-stem checkpoint (PyTorch-Encoding): set model.stem: deep"
    return ""
