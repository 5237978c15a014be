"""A run's two identities: what determines its weights, and what determines its numbers.

* The **training identity** (:func:`training_identity`) is every resolved setting that changes the trained
  weights: ``model``; ``data`` less where the prepared data lies (``root``), how many loader processes
  read it (``workers``) and the split validated on during training (``val_split``: read only by that
  validation, which logs a number and restores the RNG); ``train`` less the cadence of logging,
  checkpoints and that validation (``log_interval``, ``checkpoint_interval``, ``eval_interval``); ``model``
  less ``ema.eval_stages`` (the
  EM iterations at test time, T_eval, which training never reads), and less all of ``model.ema`` for a head
  other than ``ema``, which never reads it. ``train.cpu_threads`` stays in: CPU
  floating-point sums depend on the thread count. The digest of the initial weights (ImageNet checkpoint,
  or a finetune's parent ``model.pt``) is not part of it: both orchestrators see those files as inputs,
  and ``run.json`` records their digest (``emanet status`` compares it).
* The **evaluation identity** (:func:`evaluation_identity`) is the training identity's digest plus the
  evaluated dataset, split, output stride and default T_eval (EMA heads only: no other head reads it), and
  each protocol's parsed settings; the test scales enter only for multi-scale protocols, so editing them
  leaves single-scale-only runs alone.

Neither holds names (profile, experiment), locations (``sources``, ``data.root``) or tracking: renaming a
run or moving the data does not make it another run. :func:`digest` is the short hash of an identity,
written into ``run.json`` and into the configure step's files (``results/<profile>/configs/``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from emanet.config import Config

#: Settings left out of the training identity (dotted keys): locations, cadences and test-time settings.
NOT_TRAINING = (
    "model.ema.eval_stages",
    "data.root",
    "data.workers",
    "data.val_split",
    "train.log_interval",
    "train.checkpoint_interval",
    "train.eval_interval",
)


def training_identity(cfg: Config) -> dict[str, Any]:
    """``{"model": {...}, "data": {...}, "train": {...}}``: the settings that determine ``model.pt``."""
    values = cfg.to_dict()
    return current_rules({section: values[section] for section in ("model", "data", "train")})


def current_rules(values: dict[str, Any]) -> dict[str, Any]:
    """A recorded training identity's ``values`` with the settings :func:`training_identity` leaves out now
    removed (an identity recorded before a setting such as ``data.val_split`` was found not to change the
    weights): what to compare with the identity of today's settings."""
    kept = {k: _without(v, k) if isinstance(v, dict) else v for k, v in values.items()}
    model = kept.get("model")
    if isinstance(model, dict) and model.get("head") != "ema":  # only the EMA unit reads model.ema (models/heads.py)
        model.pop("ema", None)
    return kept


def same_training(recorded: str | None, values: Any, now: dict[str, Any]) -> bool:
    """Whether a recorded training identity (its digest and ``values``) is the identity ``now``: the same
    digest, or the same once the recorded values follow today's rules (:func:`current_rules`)."""
    if recorded == digest(now):
        return True
    return isinstance(values, dict) and digest(current_rules(values)) == digest(now)


def _without(tree: dict[str, Any], where: str) -> dict[str, Any]:
    """``tree`` less the keys of :data:`NOT_TRAINING` below ``where`` (a dotted prefix)."""
    kept = {}
    for key, value in tree.items():
        dotted = f"{where}.{key}"
        if dotted in NOT_TRAINING:
            continue
        kept[key] = _without(value, dotted) if isinstance(value, dict) else value
    return kept


def evaluation_identity(cfg: Config, protocols: list[str]) -> dict[str, Any]:
    """The settings that determine the metrics files of ``protocols`` (``ss``, ``ms_flip``, ``ss_T3``...).

    ``{"training": <training digest>, "dataset", "split", "output_stride", "eval_stages", "server_labels",
    "protocols": {name: {"multi_scale", "flip", "T_eval", "scales"?}}}``; ``scales`` only for a multi-scale
    protocol. Raises ConfigError for a protocol name outside the grammar.
    """
    from emanet.protocols import Protocol

    parsed = {}
    for name in sorted(protocols):
        protocol = Protocol.parse(name)
        entry: dict[str, Any] = {"multi_scale": protocol.multi_scale, "flip": protocol.flip, "T_eval": protocol.stages}
        if protocol.multi_scale:
            entry["scales"] = list(cfg.eval.scales)
        parsed[name] = entry
    return {
        "training": digest(training_identity(cfg)),
        "dataset": cfg.eval.dataset or cfg.data.dataset,
        "split": cfg.eval.split,
        "output_stride": cfg.eval.output_stride or cfg.model.output_stride,
        "eval_stages": cfg.model.ema.eval_stages if cfg.model.head == "ema" else None,  # read by EMA units alone
        "server_labels": cfg.eval.server_labels,
        "protocols": parsed,
    }


def canonical_json(identity: dict[str, Any]) -> str:
    """The identity as sorted, compact JSON: the text its digest is taken of."""
    return json.dumps(identity, sort_keys=True, separators=(",", ":"))


def digest(identity: dict[str, Any]) -> str:
    """The first 12 hex digits of the SHA-256 of :func:`canonical_json` (48 bits: no collision among the
    runs of one project in practice; the full identity is kept beside it wherever it is written)."""
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:12]
