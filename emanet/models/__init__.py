"""EMANet and the comparison models. Knows nothing of files, datasets or tracking."""

from emanet.models.ema import EMAUnit
from emanet.models.segmentor import Segmentor, build_model

__all__ = ["EMAUnit", "Segmentor", "build_model"]
