"""COCO detection and instance-segmentation scores (no torch: `cvtrain-score` starts fast).

`evaluate_coco` gives COCOeval's 12 stats by name, with pycocotools or faster-coco-eval;
`coco_evaluation` also keeps the precision array a PR curve is drawn from.
"""

from __future__ import annotations

from cvtrain.metrics.detection.categories import validate_categories
from cvtrain.metrics.detection.coco_eval import (
    BACKENDS,
    STAT_LABELS,
    STAT_NAMES,
    CocoEvaluation,
    coco_evaluation,
    evaluate_coco,
    precision_recall,
)
from cvtrain.metrics.detection.pr_curve import save_pr_curve

__all__ = [
    "BACKENDS",
    "STAT_LABELS",
    "STAT_NAMES",
    "CocoEvaluation",
    "coco_evaluation",
    "evaluate_coco",
    "precision_recall",
    "save_pr_curve",
    "validate_categories",
]
