"""The evaluation protocol grammar, in one place with its inverse; torch-free.

A protocol name is ``ss`` or ``ms`` (single- or multi-scale), then ``_flip`` (averaged with the mirrored
image), then ``_T<n>`` (the EMA unit's EM iterations at test time, T_eval; Fig. 4's axis): ``ss``,
``ms_flip``, ``ss_T3``, ``ms_flip_T4``. :meth:`Protocol.parse` reads a name and :attr:`Protocol.name` writes
it back: ``Protocol.parse(p.name) == p`` for every protocol and ``Protocol.parse(n).name == n`` for every
name of the grammar (``tests/test_plan.py`` checks both).

Both the plan (``emanet.plan``: which protocols the tables need of each run, the ``metric:<protocol>``
columns of params.yaml) and the engine (``emanet.engine.inference``, ``emanet.engine.evaluate``: how a
protocol predicts, the metrics file it writes) import it from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from emanet.config import ConfigError

GRAMMAR = "ss|ms, optional _flip, optional _T<n> with n >= 1"
_PROTOCOL = re.compile(r"^(ss|ms)(_flip)?(?:_T([1-9]\d*))?$")


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol: ``multi_scale`` (over eval.scales), ``flip``, ``stages`` (T_eval, None = as
    the model was built). Neither multi-scale nor flip is the plain single-scale argmax."""

    multi_scale: bool
    flip: bool
    stages: int | None = None

    def __post_init__(self):
        if self.stages is not None and (isinstance(self.stages, bool) or self.stages < 1):
            raise ValueError(f"Protocol.stages (T_eval) must be None or an integer >= 1, got {self.stages!r}")

    @classmethod
    def parse(cls, name: str) -> Protocol:
        """``ss``, ``ms_flip``, ``ss_T3``... -> the protocol. Raises ConfigError naming ``name`` and the
        grammar when it is not a protocol name (e.g. ``ms_T0``, ``flip``, ``ss_flip_T``)."""
        match = _PROTOCOL.match(name) if isinstance(name, str) else None
        if not match:
            raise ConfigError(f"unknown evaluation protocol {name!r} (expected {GRAMMAR})")
        return cls(match.group(1) == "ms", bool(match.group(2)), int(match.group(3)) if match.group(3) else None)

    @property
    def name(self) -> str:
        """The protocol's name in the grammar (the inverse of :meth:`parse`): ``ms_flip``, ``ss_T3``..."""
        name = ("ms" if self.multi_scale else "ss") + ("_flip" if self.flip else "")
        return name + (f"_T{self.stages}" if self.stages is not None else "")

    @property
    def averaged(self) -> bool:
        """Softmax averaged over views (any MS or flip protocol), not the argmax of one view's logits."""
        return self.multi_scale or self.flip
