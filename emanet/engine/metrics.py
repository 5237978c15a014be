"""Confusion matrix and the scores computed from it (one matrix over the whole set,
docs/reproducing.md#evaluation-protocol)."""

from __future__ import annotations

import json
import re

import numpy as np
import torch

#: a JSON list of numbers as ``json.dumps(indent=...)`` lays it out: one number a line
_NUMBER = r"(?:-?(?:\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|Infinity)|NaN|null)"
_NUMBER_LIST = re.compile(rf"\[\n\s*({_NUMBER}(?:,\n\s*{_NUMBER})*)\n\s*\]")


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """(num_classes x num_classes) counts, rows = ground truth, columns = prediction; ignored pixels skipped."""
    valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
    index = target[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(matrix: np.ndarray, class_names: list[str]) -> dict:
    """mIoU (nan-mean over classes present in prediction or ground truth), pixel acc, mean acc, FWIoU."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    gt, pred = matrix.sum(axis=1), matrix.sum(axis=0)
    union = gt + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    total = matrix.sum()
    freq = gt / total if total else gt
    return {
        "miou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
        "pixel_acc": float(tp.sum() / total) if total else float("nan"),
        "mean_acc": float(np.nanmean(acc)) if np.any(gt > 0) else float("nan"),
        "fwiou": float(np.nansum(freq * np.nan_to_num(iou))),
        "per_class": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, iou, strict=True)},
    }


def metrics_json(result: dict) -> str:
    """``metrics.json``'s text: ``result`` indented, sorted by key, each list of numbers on one line (the
    confusion matrix one row a line, rows = ground truth), so that a person can read the file."""
    text = json.dumps(result, indent=2, sort_keys=True)
    # A JSON string holds no raw newline, so the pattern (newlines between the numbers) never matches in one.
    return _NUMBER_LIST.sub(lambda m: "[" + re.sub(r",\n\s*", ", ", m.group(1)) + "]", text) + "\n"
