"""Segmentation metrics from one confusion matrix, as the Cityscapes benchmark computes
them: IoU per class = TP / (TP + FP + FN) over the whole set, mIoU = mean over classes that
occur (in ground truth or prediction), ground-truth pixels labelled 255 ignored.

A prediction outside the evaluated classes (e.g. 255) lands in an extra "other" column: a
miss for its ground-truth class and a false positive for none, as in the official script.
"""

from __future__ import annotations

from typing import Any

import numpy as np

IGNORE = 255


class ConfusionMatrix:
    """Rows: ground-truth class, columns: predicted class plus "other"."""

    def __init__(self, num_classes: int) -> None:
        self.n = num_classes
        self.matrix = np.zeros((num_classes, num_classes + 1), np.int64)

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        """Add (H, W) predicted and ground-truth class ids."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ")
        keep = target < self.n
        t = target[keep].astype(np.int64)
        p = np.minimum(prediction[keep].astype(np.int64), self.n)  # n = "other"
        self.matrix += np.bincount(t * (self.n + 1) + p,
                                   minlength=self.n * (self.n + 1)).reshape(self.matrix.shape)

    def merge(self, other: ConfusionMatrix) -> None:
        self.matrix += other.matrix

    def compute(self, names: tuple[str, ...] | list[str] | None = None) -> dict[str, Any]:
        """{"miou", "pixel_acc", "per_class": {name: IoU or None if absent}}."""
        m = self.matrix.astype(np.float64)
        tp = np.diag(m[:, :self.n])
        fn = m.sum(1) - tp
        fp = m[:, :self.n].sum(0) - tp
        denom = tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(denom > 0, tp / denom, np.nan)
        names = list(names) if names is not None else [str(i) for i in range(self.n)]
        return {"miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
                "pixel_acc": float(tp.sum() / max(m.sum(), 1)),
                "per_class": {name: (None if np.isnan(v) else float(v))
                              for name, v in zip(names, iou, strict=True)}}
