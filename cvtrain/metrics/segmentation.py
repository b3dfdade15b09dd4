"""Semantic segmentation: pixel accuracy, mean IoU and per-class IoU from one confusion matrix.

Definitions as mmsegmentation's (aAcc, mIoU, IoU per class), over the whole split:
pixels whose label is `ignore_index` are left out; a class's IoU is
intersection / union of its predicted and true pixels counted over every image, not
averaged per image. A class absent from both the labels and the predictions has an
undefined IoU (0/0): it is NaN in the per-class scores and left out of the mean, as
mmseg's nanmean and torchmetrics' macro JaccardIndex leave it out. The matrix is a sum,
so ranks add theirs and the scores equal those of the whole split in one process.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from cvtrain.errors import UserError
from cvtrain.metrics.base import SumMetric
from cvtrain.registry import METRICS


@METRICS.register("iou", family="segmentation")
class SegmentationIoU(SumMetric):
    """pixel_acc, miou and iou_<class>: from (true class, predicted class) pixel counts."""

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        device: torch.device | str = "cpu",
    ):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        names = class_names if class_names is not None else range(num_classes)
        self.keys = [f"iou_{_key(name)}" for name in names]
        super().__init__(device)

    def initial_state(self):
        # int64: pixel counts of a whole split stay exact (float32 would not past 2**24)
        return {"matrix": torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)}

    def update(self, pred: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None) -> None:
        """Count the labelled pixels of a batch: `pred` and `target` are (B, H, W) class indices."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        ignore = self.ignore_index if ignore_index is None else ignore_index
        valid = target != ignore
        pred, target = pred[valid].long(), target[valid].long()
        self._check_range(target, "label", ignore)
        self._check_range(pred, "prediction", ignore)
        n = self.num_classes
        counts = torch.bincount(target * n + pred, minlength=n * n).view(n, n)
        self.add(matrix=counts)

    def _check_range(self, values: torch.Tensor, what: str, ignore: int) -> None:
        """A class index outside 0..n-1 would count in another cell; say so instead."""
        bad = (values < 0) | (values >= self.num_classes)
        if bool(bad.any()):
            value = int(values[bad][0])
            raise UserError(
                f"segmentation {what} {value} is outside the classes 0..{self.num_classes - 1} and is not the "
                f"ignore index {ignore}; set the dataset's num_classes / ignore_index to match its masks."
            )

    def matrix(self) -> torch.Tensor:
        """The whole split's (true, predicted) pixel counts, summed over ranks."""
        return self.synced_state()["matrix"].cpu()

    def score(self, state):
        matrix = state["matrix"].double().cpu()
        hits = matrix.diag()
        union = matrix.sum(0) + matrix.sum(1) - hits
        iou = hits / union  # 0/0 = NaN: a class neither labelled nor predicted
        total = float(matrix.sum())
        present = ~torch.isnan(iou)
        scores = {
            "pixel_acc": float(hits.sum()) / total if total else 0.0,
            "miou": float(iou[present].mean()) if bool(present.any()) else 0.0,
        }
        scores.update({key: float(value) for key, value in zip(self.keys, iou)})
        return scores


def _key(name: str) -> str:
    """A class name as a metric-key suffix: 'traffic light' -> 'traffic_light'."""
    return re.sub(r"\W+", "_", str(name)).strip("_") or "class"
