"""Class maps of several evaluation protocols from one image, each forward pass made once and shared.

A protocol (:class:`emanet.protocols.Protocol`, where its names' grammar lives) is single-scale or
multi-scale, with or without flip, at a T_eval (the EMA unit's EM iterations, Fig. 4's axis). Single-scale
(docs/reproducing.md#evaluation-protocol):
the image padded bottom/right to 8k+1, logits upsampled bilinearly (``align_corners=True``),
argmax over the unpadded region. Averaged protocols (MS, flip; §5.2): softmax of every view (each scale, plain
and mirrored), resized back to the image, mirrored back, summed scale by scale (plain before mirrored), argmax.

What is shared within one image (results are those of each protocol run alone, bit for bit):

- the image is rescaled once per scale;
- the backbone runs once per (scale, views): every T_eval reuses those features, and so does the head's
  first convolution (``fc0``, before the EMA unit); the rest of the head runs once per distinct T_eval
  (T_eval ``None`` = as the model was built; equal values run once; a model without an EMA unit runs
  its head once for all of them);
- the single-scale view is the multi-scale protocols' plain view at scale 1.0;
- each view's softmax is computed once and added to every protocol that averages it.

``batch_views`` puts a scale's plain and mirrored views in one forward pass of batch 2, which keeps a GPU
busy. On CPU, oneDNN chooses convolution kernels by the input's shape, batch included, so a batch of 2
rounds differently from two batches of 1 (measured: up to ~1e-6 in the logits of the tiny model, from its
first 3x3 convolution on 16 channels): evaluation batches views only on CUDA, so CPU matrices stay
identical to one view at a time. Batched views are never shared with an unbatched protocol (the
single-scale view then has its own pass), so sharing never changes a result on either device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from emanet.data.loading.transforms import pad_to_8k1, rescale
from emanet.models import Segmentor
from emanet.protocols import Protocol


class SharedViewPredictor:
    """Predicts every protocol's class map (H, W) for one normalised image (3, H, W) on the model's device.

    ``scales``: the multi-scale protocols' scales, in the order their softmaxes are summed (needed when a
    protocol is multi-scale). ``autocast_dtype``: run the network under ``torch.autocast`` at that dtype
    (softmaxes are summed in at least float32). The model's T_eval is restored after each call.
    Raises ValueError for an empty protocol list or multi-scale without scales.
    """

    def __init__(
        self,
        model: Segmentor,
        protocols: Sequence[Protocol],
        scales: Sequence[float] | None = None,
        batch_views: bool = False,
        autocast_dtype: torch.dtype | None = None,
    ):
        if not protocols:
            raise ValueError("SharedViewPredictor needs at least one protocol")
        if any(p.multi_scale for p in protocols) and not scales:
            raise ValueError("a multi-scale protocol needs scales (e.g. eval.scales in params.yaml)")
        self.model, self.protocols, self.autocast_dtype = model, list(protocols), autocast_dtype
        self.scales = list(scales or [])
        self._units = list(model.ema_units())
        self._built = [unit.eval_stages for unit in self._units]
        one = self.scales.index(1.0) if 1.0 in self.scales else len(self.scales)
        self._scale_of = self.scales + [1.0] * (one == len(self.scales))  # position -> scale
        # For each protocol: its views (position, mirrored) in summation order, and the group of views
        # (position, mirrored flags) each one is computed in.
        self._plan: list[list[tuple[tuple[int, tuple[bool, ...]], int, tuple[int, ...]]]] = []
        groups: dict[tuple[int, tuple[bool, ...]], dict[tuple[int, ...], None]] = {}
        for protocol in self.protocols:
            positions = range(len(self.scales)) if protocol.multi_scale else [one]
            flips = (False, True) if protocol.flip else (False,)
            stages = self._stage_key(protocol.stages)
            plan = []
            for position in positions:
                views = (
                    [((position, flips), i) for i in range(len(flips))]
                    if batch_views
                    else [((position, (flipped,)), 0) for flipped in flips]
                )
                for group, index in views:
                    groups.setdefault(group, {})[stages] = None
                    plan.append((group, index, stages))
            self._plan.append(plan)
        self._groups = sorted(groups.items())  # by position, then (False,) < (False, True) < (True,)
        self._users: dict[tuple, list[int]] = {}  # (group, index in group, stage key) -> protocols using it
        for number, plan in enumerate(self._plan):
            for view in plan:
                self._users.setdefault(view, []).append(number)

    def _stage_key(self, stages: int | None) -> tuple[int, ...]:
        """The T_eval each EMA unit runs at (``()`` without one: every protocol's head is the same)."""
        return tuple(
            stages if stages is not None else built or unit.stages
            for unit, built in zip(self._units, self._built, strict=True)
        )

    def _set_stages(self, key: tuple[int, ...]) -> None:
        for unit, stages in zip(self._units, key, strict=True):
            unit.eval_stages = stages

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        """One class map (H, W, int64, on the image's device) per protocol, in the protocols' order."""
        h, w = image.shape[-2:]
        maps: list[torch.Tensor | None] = [None] * len(self.protocols)
        totals: list[torch.Tensor | None] = [None] * len(self.protocols)
        scaled: dict[int, torch.Tensor] = {}
        try:
            for group, stage_keys in self._groups:
                position, flips = group
                if position not in scaled:
                    scale = self._scale_of[position]
                    scaled[position] = rescale(image, None, scale)[0] if scale != 1.0 else image
                view = scaled[position]
                vh, vw = view.shape[-2:]
                batch = torch.stack([pad_to_8k1(view.flip(-1) if flipped else view)[0] for flipped in flips])
                with self._autocast(image.device):
                    features = self.model.backbone(batch)
                    # fc0 does not depend on T_eval: with several, it runs once and the rest per T_eval
                    reduced = self.model.head.fc0(features) if len(stage_keys) > 1 else None
                for stages in stage_keys:
                    self._set_stages(stages)
                    with self._autocast(image.device):
                        if reduced is None:
                            logits = self.model.decode(features, batch.shape[-2:])
                        else:
                            logits = self.model.upsample(self.model.head.after_fc0(reduced), batch.shape[-2:])
                    logits = logits[:, :, :vh, :vw]
                    for index, flipped in enumerate(flips):
                        self._add(
                            logits[index : index + 1],
                            flipped,
                            (h, w),
                            self._users.get((group, index, stages), []),
                            maps,
                            totals,
                        )
        finally:
            self._set_stages(tuple(self._built))
        return [m if m is not None else t[0].argmax(0) for m, t in zip(maps, totals, strict=True)]

    def _add(
        self, logits: torch.Tensor, flipped: bool, size: tuple[int, int], numbers: list[int], maps: list, totals: list
    ) -> None:
        """One view's logits (1, classes, vh, vw) into the protocols ``numbers`` that use it."""
        probs = None
        for number in numbers:
            if not self.protocols[number].averaged:
                maps[number] = logits[0].argmax(0)
                continue
            if probs is None:  # bf16/fp16 under AMP: summed in >= float32
                probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)
                if tuple(logits.shape[-2:]) != size:
                    probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=True)
                probs = probs.flip(-1) if flipped else probs
            totals[number] = probs if totals[number] is None else totals[number] + probs
