"""Load checkpoints into models, strictly, with short reports that name the cause.

The official code loads with ``strict=False``, which silently hid key mismatches from its users
(EMANet#9). Here every key is accounted for:

* **ImageNet checkpoints into a backbone** (:func:`load_backbone_weights`): the classifier (``fc.*``) is
  the only thing a checkpoint may carry that the backbone lacks, BatchNorm's ``num_batches_tracked`` the
  only thing it may lack, and a tensor whose shape does not fit is refused with its key named.
* **Whole models** (a run's ``model.pt`` for evaluation and prediction, ``train.init_from``'s parent,
  the model inside a resumable checkpoint, and imported foreign weights): :func:`load_state` checks the
  state dict against the model first (:func:`compare`) and refuses a misfit with a few lines — how many
  entries match, the missing and unexpected counts with a handful of examples, the shape conflicts by
  name, which architecture the checkpoint was made for against the model's, and the layout it looks
  like (the official EMANet naming, a ``module.`` prefix, a bare ImageNet backbone...). Never a dump of
  hundreds of keys.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from emanet.models import official

log = logging.getLogger(__name__)

#: Prefixes that training wrappers (DataParallel, DDP, our own Segmentor) put before backbone keys.
_WRAPPER_PREFIXES = ("module.", "backbone.")
#: Containers that checkpoints commonly nest their state dict in.
_NESTING_KEYS = ("state_dict", "model", "net")
#: How many keys an error message shows of each kind.
EXAMPLES = 4


class WeightLoadError(ValueError):
    """A checkpoint that does not fit the model; the message names the file and the cause."""


def abbreviate(keys: Iterable[str], limit: int = EXAMPLES) -> str:
    """``"a, b, c, d, … (57 in all)"``: the first ``limit`` keys and how many there are."""
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys)} in all)" if len(keys) > limit else "")


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
            parts.append(f"missing: {abbreviate(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected: {abbreviate(self.unexpected)}")
        return "; ".join(parts)


#: What to do about a checkpoint torch cannot read safely. Never torch's own advice (weights_only=False),
#: which would run whatever code the file holds.
REFETCH_HINT = "download it again (`emanet download`), or re-save the state dict with torch.save(state_dict, path)"


def torch_load_reason(exc: BaseException) -> str:
    """``Type: first line`` of torch's message, without its advice to load with weights_only=False."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if "weights_only" in first or "Weights only load failed" in first:
        first = "it holds objects a weights-only load refuses"
    first = first if len(first) <= 160 else first[:157] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def load_weights_file(path: Path, what: str = "checkpoint file") -> object:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain containers, never code.

    Raises WeightLoadError "<path>: <what> not found" for a missing file, and for a file torch cannot
    read safely (damaged, not a PyTorch file, or holding other objects) one short reason and the fix."""
    if not path.is_file():
        raise WeightLoadError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt or unsafe files
        raise WeightLoadError(
            f"{path}: not a readable weights-only PyTorch checkpoint ({torch_load_reason(exc)}); {REFETCH_HINT}"
        ) from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely (``weights_only=True``) and unwrap common nestings/prefixes."""
    path = Path(path)
    obj = load_weights_file(path)
    for key in _NESTING_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise WeightLoadError(
            f"{path}: expected a state dict (names -> tensors), found {describe_object(obj)}; "
            f"use an ImageNet checkpoint of torchvision or PyTorch-Encoding (`emanet download`)"
        )
    return {_strip_prefixes(k): v for k, v in obj.items()}


# --- whole models -----------------------------------------------------------------------------------


def _counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


@dataclass
class FitReport:
    """How a state dict fits a model's: entries matched, missing, unexpected and of another shape."""

    matched: int
    total: int
    missing: list[str]
    unexpected: list[str]
    conflicts: list[tuple[str, tuple[int, ...], tuple[int, ...]]]
    absent_counters: int = 0  # BatchNorm num_batches_tracked entries absent where that is allowed

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.conflicts)

    def summary(self) -> str:
        """One line: counts, a handful of examples of each kind, the first shape conflicts by name."""
        parts = [f"{self.matched} of the model's {self.total} entries match"]
        if self.absent_counters:
            parts.append(f"{self.absent_counters} BatchNorm counters (num_batches_tracked) absent, which is allowed")
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({abbreviate(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({abbreviate(self.unexpected)})")
        if self.conflicts:
            shown = ", ".join(f"{key} {tuple(a)} vs {tuple(b)}" for key, a, b in self.conflicts[:EXAMPLES])
            more = f", … ({len(self.conflicts)} in all)" if len(self.conflicts) > EXAMPLES else ""
            parts.append(f"{len(self.conflicts)} of another shape (checkpoint vs model: {shown}{more})")
        return "; ".join(parts)


def compare(
    source: Mapping[str, object], target: Mapping[str, torch.Tensor], optional_counters: bool = False
) -> FitReport:
    """Compare a checkpoint's state dict with a model's (``model.state_dict()``), key by key.

    A non-tensor value or a non-string key counts as unexpected. With ``optional_counters``, BatchNorm's
    ``num_batches_tracked`` may be absent (older and foreign checkpoints); dtypes are not compared
    (``load_state_dict`` casts).
    """
    absent = [k for k in target if k not in source]
    missing = [k for k in absent if not (optional_counters and _counter(k))]
    unexpected, conflicts, matched = [], [], 0
    for key, value in source.items():
        if not isinstance(key, str) or key not in target or not isinstance(value, torch.Tensor):
            unexpected.append(key if isinstance(key, str) else repr(key))
        elif value.shape != target[key].shape:
            conflicts.append((key, tuple(value.shape), tuple(target[key].shape)))
        else:
            matched += 1
    return FitReport(matched, len(target), missing, unexpected, conflicts, len(absent) - len(missing))


def architecture(state: Mapping[str, object]) -> dict[str, object]:
    """What network an emanet-named state dict was made for, read from its keys and shapes: backbone
    (by bottlenecks per stage), stem, layer1 width, head kind, head channels C, bases K, classes."""
    from emanet.models.resnet import DEPTHS

    def shape(key: str) -> tuple[int, ...] | None:
        value = state.get(key)
        return tuple(value.shape) if isinstance(value, torch.Tensor) else None

    keys = [k for k in state if isinstance(k, str)]
    arch: dict[str, object] = {}
    blocks = tuple(
        len({k.split(".")[2] for k in keys if k.startswith(f"backbone.layer{i}.") and k.count(".") > 2})
        for i in range(1, 5)
    )
    if any(blocks):
        names = [name for name, depth in DEPTHS.items() if depth == blocks]
        arch["backbone"] = names[0] if names else f"ResNet with {'-'.join(map(str, blocks))} bottlenecks"
    if shape("backbone.conv1.0.weight"):
        arch["stem"] = "deep"
    elif shape("backbone.conv1.weight"):
        arch["stem"] = "torchvision"
    if shape("backbone.layer1.0.conv1.weight"):
        arch["width"] = shape("backbone.layer1.0.conv1.weight")[0]
    if any(k.startswith("head.fc0.convs.") for k in keys):
        arch["head"] = "aspp"
    elif shape("head.block.bases"):
        arch["head"] = "ema"
    elif shape("head.block.theta.weight"):
        arch["head"] = "nonlocal"
    elif shape("head.block.conv_a.weight"):
        arch["head"] = "a2"
    elif shape("head.fc0.0.weight"):
        arch["head"] = "fcn"
    if shape("head.fc0.0.weight"):
        arch["channels"] = shape("head.fc0.0.weight")[0]
    if shape("head.block.bases"):
        arch["bases"] = shape("head.block.bases")[-1]
    if shape("head.classifier.weight"):
        arch["classes"] = shape("head.classifier.weight")[0]
    return arch


#: How each field of :func:`architecture` is named in messages, and the setting that chooses it.
_FIELDS = {
    "backbone": ("backbone", "model.backbone"),
    "stem": ("stem", "model.stem"),
    "width": ("layer1 width", "model.base_width"),
    "head": ("head", "model.head"),
    "channels": ("head channels C", "model.head_channels"),
    "bases": ("bases K", "model.ema.num_bases"),
    "classes": ("classes", "the dataset"),
}


def architecture_difference(source: Mapping[str, object], target: Mapping[str, torch.Tensor]) -> str:
    """``"made for backbone resnet101, head channels C 512; the model has resnet_tiny, 64 (model.backbone,
    model.head_channels)"``, or "" when the keys and shapes tell no difference."""
    ours, theirs = architecture(target), architecture(source)
    differ = [f for f in _FIELDS if f in theirs and theirs.get(f) != ours.get(f)]
    if not differ:
        return ""
    made = ", ".join(f"{_FIELDS[f][0]} {theirs[f]}" for f in differ)
    model = ", ".join(str(ours.get(f, "none")) for f in differ)
    settings = ", ".join(_FIELDS[f][1] for f in differ)
    return f"the checkpoint was made for {made}; the model has {model} (set by {settings})"


def layout_hint(keys: Iterable[object], importing: bool = False) -> str:
    """What a state dict whose keys do not fit looks like, and what to do; "" if nothing is recognised.

    ``importing``: the keys come from `emanet import-weights` (wrappers and the official naming already
    handled), so only the other layouts are worth naming."""
    keys = [k for k in keys if isinstance(k, str)]
    if not keys:
        return ""
    convert = "convert it with `emanet import-weights FILE --experiment NAME`"
    if not importing and sum(k.startswith("module.") for k in keys) > len(keys) // 2:
        return f"its keys carry DataParallel/DDP's `module.` prefix: {convert}"
    if official.looks_official(keys):
        return (
            f"it uses the official EMANet naming (extractor., emau., fc2.): "
            f"{'read it with --format official (or auto)' if importing else convert}"
        )
    if any(k.startswith(("decode_head.", "auxiliary_head.")) for k in keys):
        return "it looks like an mmsegmentation checkpoint (decode_head.*), a layout emanet does not read"
    backbone_only = not any(k.startswith("head.") for k in keys)
    if backbone_only and any(k.startswith(("layer1.", "backbone.layer1.")) for k in keys):
        return (
            "it looks like a backbone alone (an ImageNet classification checkpoint: no segmentation head); "
            "use it for training as model.pretrained"
        )
    return ""


def fit_message(
    source: Mapping[str, object],
    target: Mapping[str, torch.Tensor],
    what: str,
    optional_counters: bool = False,
    importing: bool = False,
) -> str | None:
    """None if ``source`` fits ``target``, else the few lines that say how and why it does not."""
    report = compare(source, target, optional_counters)
    if report.fits:
        return None
    lines = [f"does not fit {what}: {report.summary()}"]
    cause = architecture_difference(source, target)
    hint = layout_hint(source, importing)
    if cause:
        lines.append(f"  cause: {cause}")
    if hint:
        lines.append(f"  hint: {hint}")
    return "\n".join(lines)


def load_state(
    model: nn.Module,
    state: object,
    source: str | Path,
    what: str = "the configured model",
    optional_counters: bool = False,
    importing: bool = False,
) -> None:
    """Copy a whole model's state dict into ``model`` after checking that every entry fits.

    ``state`` must be a dict of tensors with exactly the model's keys and shapes (BatchNorm's
    ``num_batches_tracked`` may be absent with ``optional_counters``: the model's own counters stay).
    Raises WeightLoadError "<source>: does not fit <what>: ..." (see :func:`fit_message`).
    """
    if not isinstance(state, dict):
        raise WeightLoadError(f"{source}: expected a state dict (a dict of tensors), got {describe_object(state)}")
    message = fit_message(state, model.state_dict(), what, optional_counters, importing)
    if message:
        raise WeightLoadError(f"{source}: {message}")
    model.load_state_dict(state, strict=not optional_counters)


def read_model_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A run's ``model.pt``: a plain state dict in emanet's naming, as training and `emanet import-weights`
    write it, read with ``weights_only=True``.

    Anything else (a missing, corrupt or unsafe file, a nested or foreign checkpoint) raises
    WeightLoadError naming the file and, for a foreign layout, the command that converts it.
    """
    path = Path(path)
    state = load_weights_file(path, "weights file")
    if not isinstance(state, dict):
        raise WeightLoadError(f"{path}: expected a state dict (a dict of tensors), got {describe_object(state)}")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        nested = [k for k in _NESTING_KEYS if isinstance(state.get(k), dict)]
        hint = layout_hint(state[nested[0]]) if nested else ""
        raise WeightLoadError(
            f"{path}: expected a plain state dict of tensors (a run's model.pt), found "
            f"{describe_object(state)}"
            + (
                f"; {hint}"
                if hint
                else "; convert a foreign checkpoint with `emanet import-weights FILE --experiment NAME`"
                if nested
                else ""
            )
        )
    return state


def load_model_weights(model: nn.Module, path: str | Path) -> None:
    """A whole model's state dict (a run's ``model.pt``: backbone, head, EMA bases), strictly: read by
    :func:`read_model_weights`, checked and loaded by :func:`load_state` (errors name the file)."""
    load_state(model, read_model_weights(path), path)


def describe_object(obj: object) -> str:
    """A few words on what a loaded object is: ``a dict with net (659 tensors), step (int)``."""
    if isinstance(obj, dict):
        items = []
        for key, value in list(obj.items())[:EXAMPLES]:
            tensors = sum(isinstance(v, torch.Tensor) for v in value.values()) if isinstance(value, dict) else 0
            if tensors:
                kind = f"{tensors} tensors"
            else:
                kind = type(value).__name__
            items.append(f"{key!r} ({kind})")
        more = f", … ({len(obj)} entries in all)" if len(obj) > EXAMPLES else ""
        return f"a dict with {', '.join(items)}{more}" if items else "an empty dict"
    return f"a {type(obj).__name__}"


# --- backbones ----------------------------------------------------------------------------------------


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
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
            mismatched.append(
                f"key {key!r} has shape {tuple(tensor.shape)} in the checkpoint "
                f"but {tuple(target[key].shape)} in the model"
            )
        else:
            report.loaded.append(key)
    report.missing = [k for k in target if k not in source and not k.endswith("num_batches_tracked")]
    if (report.missing or report.unexpected) and strict:
        raise WeightLoadError(
            f"{path}: checkpoint does not match the {type(backbone).__name__}: "
            f"{report.summary()}{_stem_hint(source, target)}"
        )
    if mismatched:
        raise WeightLoadError(
            f"{path}: {mismatched[0]}" + (f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else "")
        )
    if report.missing or report.unexpected:
        log.warning("%s: partial load: %s", path, report.summary())
    backbone.load_state_dict({k: source[k] for k in report.loaded}, strict=False)
    log.info("%s: %s", path, report.summary())
    return report


def _stem_hint(source: dict, target: dict) -> str:
    """Say which stem the checkpoint was made for when it is the other one; or that it is a whole model."""
    if "conv1.weight" in source and "conv1.0.weight" in target:
        return ". This is a torchvision-style checkpoint (7x7 stem): set model.stem: torchvision"
    if "conv1.0.weight" in source and "conv1.weight" in target:
        return ". This is a deep-stem checkpoint (PyTorch-Encoding): set model.stem: deep"
    if any(k.startswith("head.") for k in source) or official.looks_official(source):
        return (
            ". This is a whole segmentation model, not an ImageNet backbone: import it with "
            "`emanet import-weights` (or start a finetune from a run with train.init_from)"
        )
    return ""
