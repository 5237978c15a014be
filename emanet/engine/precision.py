"""The floating-point precision training and evaluation run the network in (``train.amp``), shared by both
so that neither stage's code imports the other's (``emanet.runs.code.STAGE_CODE`` lists it for both)."""

from __future__ import annotations

import torch

from emanet.config import ConfigError

#: ``train.amp`` -> the autocast dtype (``none``: no autocast).
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: str, device: torch.device, what: str = "run", hint: str = "") -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` (``none``: None) on ``device``, for training and evaluation alike.
    Raises ConfigError for an unknown value, or AMP off CUDA (``what``: the kind of job, in the message,
    followed by ``hint``)."""
    if amp not in ("none", *AMP_DTYPES):
        raise ConfigError(f"train.amp must be none, bf16 or fp16, got {amp!r}")
    if amp == "none":
        return None
    if device.type != "cuda":
        raise ConfigError(f"train.amp={amp} needs a CUDA device (this {what} is on {device.type}){hint}")
    return AMP_DTYPES[amp]
