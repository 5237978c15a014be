"""The official EMANet checkpoint naming, mapped key by key to emanet's.

The authors' training code saves ``{"net": state_dict, "step": int}``; its module names differ from
emanet's (which follow PyTorch-Encoding and torchvision so that ImageNet checkpoints load as they are).
The two networks are the same (ResNet-101 deep stem + EMA head: 659 state-dict entries each, equal
shapes), so a renaming by module prefix converts one into the other. The correspondence, official
-> emanet:

==========================================  ====================================================
``extractor.0.*``  (the stem: 3x3 convs     ``backbone.conv1.*``  (``.0/.3/.6`` convs, ``.1/.4`` BN)
and two BN, a Sequential)
``extractor.1.*``  (BN after the stem)      ``backbone.bn1.*``
``extractor.4.*`` ... ``extractor.7.*``     ``backbone.layer1.*`` ... ``backbone.layer4.*`` (the
                                            bottlenecks' own names, ``conv1..bn3``, ``downsample``,
                                            are the same)
``fc0.conv.*``, ``fc0.bn.*``                ``head.fc0.0.*``, ``head.fc0.1.*``
``emau.mu``  (the bases, (1, C, K))         ``head.block.bases``
``emau.conv1.*``  (1x1 conv with bias)      ``head.block.conv_in.*``
``emau.conv2.*``  (1x1 conv + BN)           ``head.block.conv_out.*``
``fc1.0.conv.*``, ``fc1.0.bn.*``            ``head.fc1.0.*``, ``head.fc1.1.*``
``fc2.*``  (the 1x1 classifier)             ``head.classifier.*``
==========================================  ====================================================

Derived from the published description of the checkpoint's keys and shapes and from emanet's own
modules; no code of the official repository (GPL-3.0) is used.
"""

from __future__ import annotations

from collections.abc import Iterable

#: (official prefix, emanet prefix), whole dotted components; the first match wins (none overlaps).
PREFIXES: tuple[tuple[str, str], ...] = (
    ("extractor.0.", "backbone.conv1."),
    ("extractor.1.", "backbone.bn1."),
    ("extractor.4.", "backbone.layer1."),
    ("extractor.5.", "backbone.layer2."),
    ("extractor.6.", "backbone.layer3."),
    ("extractor.7.", "backbone.layer4."),
    ("fc0.conv.", "head.fc0.0."),
    ("fc0.bn.", "head.fc0.1."),
    ("emau.conv1.", "head.block.conv_in."),
    ("emau.conv2.", "head.block.conv_out."),
    ("fc1.0.conv.", "head.fc1.0."),
    ("fc1.0.bn.", "head.fc1.1."),
    ("fc2.", "head.classifier."),
)
#: Whole keys renamed as they are.
EXACT: dict[str, str] = {"emau.mu": "head.block.bases"}

#: Key beginnings that only the official naming has (emanet's keys all start with backbone. or head.).
_MARKERS = ("extractor.", "emau.", "fc0.conv.", "fc1.0.conv.", "fc2.")


def to_emanet(key: str) -> str | None:
    """emanet's name for an official key, or None for a key the official model does not have."""
    if key in EXACT:
        return EXACT[key]
    for official, ours in PREFIXES:
        if key.startswith(official):
            return ours + key[len(official) :]
    return None


def to_official(key: str) -> str | None:
    """The official name of an emanet key (the inverse of :func:`to_emanet`), or None if it has none
    (a head other than EMA, for instance)."""
    for official, ours in EXACT.items():
        if key == ours:
            return official
    for official, ours in PREFIXES:
        if key.startswith(ours):
            return official + key[len(ours) :]
    return None


def looks_official(keys: Iterable[str]) -> bool:
    """Whether these state-dict keys (wrapper prefixes already removed) use the official naming."""
    return any(key.startswith(_MARKERS) for key in keys)
