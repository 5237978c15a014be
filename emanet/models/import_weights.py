"""Foreign whole-model checkpoints, read into emanet's naming: what `emanet import-weights` and
`emanet predict --weights` accept.

Recognised, in any combination:

* **containers**: the state dict itself, or nested under ``net`` (the official training code saves
  ``{"net": state_dict, "step": int}``), ``state_dict`` or ``model``, at any depth; scalars beside it
  (the official ``step``) are kept as extras;
* **wrapper prefixes**: ``module.`` before every key (a model saved from inside DataParallel or DDP),
  repeated or not;
* **naming**: the official EMANet module names (``extractor.*``, ``emau.*``, ``fc0/fc1/fc2``), mapped key by
  key by :mod:`emanet.models.official`, or emanet's own (``backbone.*``, ``head.*``);
* **BatchNorm counters**: with or without ``num_batches_tracked`` (older torch versions did not save it).

Files are read with ``torch.load(weights_only=True)`` only: tensors and plain containers, no code.
Whether the weights fit a given model is checked by :func:`emanet.models.weights.load_state`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from emanet.models import official
from emanet.models.weights import WeightLoadError, abbreviate, describe_object, layout_hint, load_weights_file

FORMATS = ("auto", "official", "emanet")
#: Containers a checkpoint may nest its state dict in, in the order they are looked for.
NESTING_KEYS = ("net", "state_dict", "model")
WRAPPER_PREFIX = "module."


@dataclass(frozen=True)
class ForeignWeights:
    """A foreign checkpoint's tensors under emanet's names, and how they were found.

    ``state``: emanet key -> tensor (keys the naming does not know are kept as they were, so that the
    fit check reports them as unexpected). ``format``: ``official`` or ``emanet``. ``nesting``: the
    container keys unwrapped, outermost first. ``prefix``: the wrapper prefix removed ("" if none).
    ``counters``: whether BatchNorm's ``num_batches_tracked`` were in the file. ``extras``: scalars found
    beside the state dict (e.g. ``{"step": 30000}``).
    """

    state: dict[str, torch.Tensor]
    format: str
    nesting: tuple[str, ...] = ()
    prefix: str = ""
    counters: bool = True
    extras: dict[str, int | float | str | bool] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Classes of the 1x1 classifier (its output channels)."""
        return int(self.state["head.classifier.weight"].shape[0])

    def describe(self) -> str:
        """``official naming, nested under 'net', 'module.' prefix removed, without num_batches_tracked``."""
        parts = [f"{self.format} naming"]
        if self.nesting:
            parts.append("nested under " + " > ".join(repr(k) for k in self.nesting))
        if self.prefix:
            parts.append(f"{self.prefix!r} prefix removed")
        if not self.counters:
            parts.append("without num_batches_tracked")
        return ", ".join(parts)


#: Deepest nesting of the state dict followed (real checkpoints use one or two levels).
_MAX_NESTING = 8


def read_foreign(path: str | Path, format: str = "auto") -> ForeignWeights:
    """Read a whole-model checkpoint of any recognised layout (module docstring) into emanet's naming.

    ``format``: ``auto`` (detect from the key names), ``official`` or ``emanet`` (take the keys as that
    naming, whatever they look like). Raises WeightLoadError naming the file for a missing, corrupt or
    unsafe file (a web page saved instead of the checkpoint included), one without a state dict, a
    naming that is neither, or a checkpoint without a classifier.
    """
    path = Path(path)
    if format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    obj = _load(path)
    nesting: list[str] = []
    extras: dict[str, int | float | str | bool] = {}
    while isinstance(obj, dict) and not _is_state_dict(obj):
        inner = [key for key in NESTING_KEYS if isinstance(obj.get(key), dict)]
        if len(nesting) >= _MAX_NESTING:  # a pickle can hold a dict inside itself: never loop forever
            raise WeightLoadError(
                f"{path}: state dict nested more than {_MAX_NESTING} deep "
                f"({' > '.join(map(repr, nesting[:4]))} > …); not a checkpoint emanet can read"
            )
        if not inner:
            raise WeightLoadError(
                f"{path}: holds no state dict: found {describe_object(obj)}; expected a dict of "
                f"tensors, possibly under one of {', '.join(map(repr, NESTING_KEYS))}"
            )
        extras.update({k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, int | float | str | bool)})
        nesting.append(inner[0])
        obj = obj[inner[0]]
    if not isinstance(obj, dict):
        raise WeightLoadError(f"{path}: holds {describe_object(obj)}, not a state dict (a dict of tensors)")
    state, prefix = _strip_wrapper(obj)
    detected = _naming(path, state) if format == "auto" else format
    if detected == "official":
        state = {official.to_emanet(k) or k: v for k, v in state.items()}
    if "head.classifier.weight" not in state:
        hint = layout_hint(state, importing=True)
        classifier = "fc2.weight" if detected == "official" else "head.classifier.weight"
        raise WeightLoadError(
            f"{path}: has no segmentation classifier ({classifier}), "
            f"so it is not a whole EMANet model" + (f"; {hint}" if hint else f"; its keys begin {abbreviate(state)}")
        )
    return ForeignWeights(
        state, detected, tuple(nesting), prefix, any(k.endswith("num_batches_tracked") for k in state), extras
    )


def check_not_web_page(path: str | Path) -> None:
    """Raise WeightLoadError if the file at ``path`` is an HTML page (what Google Drive and other hosts send
    scripts instead of a large file), before anything trusts or pins it; a missing file passes."""
    path = Path(path)
    if not path.is_file():
        return
    with open(path, "rb") as handle:
        head = handle.read(1024).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        raise WeightLoadError(
            f"{path}: is a web page ({path.stat().st_size:,} bytes of HTML), not a checkpoint: "
            f"the host answered with a page (Google Drive's download confirmation, a login) "
            f"instead of the file. Delete it, download the file in a browser and put that here"
        )


def _load(path: Path) -> object:
    """:func:`~emanet.models.weights.load_weights_file`, naming a saved web page as such."""
    try:
        return load_weights_file(path)
    except WeightLoadError:
        if path.is_file():
            check_not_web_page(path)
        raise


def _is_state_dict(obj: dict) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _strip_wrapper(state: dict) -> tuple[dict[str, torch.Tensor], str]:
    """Remove DataParallel/DDP's ``module.`` (repeated, e.g. DDP around DataParallel) from every key."""
    stripped, removed = {}, False
    for key, value in state.items():
        while key.startswith(WRAPPER_PREFIX):
            key, removed = key[len(WRAPPER_PREFIX) :], True
        stripped[key] = value
    return stripped, WRAPPER_PREFIX if removed else ""


def _naming(path: Path, state: dict[str, torch.Tensor]) -> str:
    if official.looks_official(state):
        return "official"
    if any(k.startswith(("backbone.", "head.")) for k in state):
        return "emanet"
    hint = layout_hint(state, importing=True)
    raise WeightLoadError(
        f"{path}: neither the official EMANet naming (extractor.*, emau.*, fc0/fc1/fc2) nor "
        f"emanet's (backbone.*, head.*): its keys begin {abbreviate(state)}" + (f"; {hint}" if hint else "")
    )
