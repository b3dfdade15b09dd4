"""COCO detection and instance-segmentation scores, by the reference COCOeval or its C++ port.

The 12 numbers are pycocotools' `COCOeval.stats`, unchanged: cvtrain does not compute AP
itself, it checks the inputs (see `coco_inputs`), runs evaluate / accumulate / summarize
with their printing silenced, and names the stats. `faster_coco_eval` is a drop-in C++
reimplementation that gives the same numbers (to rounding) several times faster on large
splits; pick it with `backend="faster_coco_eval"`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cvtrain.errors import UserError, unknown_choice
from cvtrain.metrics.detection.coco_inputs import IOU_TYPES, check_image_ids, load_ground_truth, load_results

STAT_NAMES = (
    "map", "map50", "map75", "map_small", "map_medium", "map_large",
    "mar1", "mar10", "mar100", "mar_small", "mar_medium", "mar_large",
)  # fmt: skip
STAT_LABELS = {
    "map": "AP  @[IoU=0.50:0.95 | area=   all | maxDets=100]",
    "map50": "AP  @[IoU=0.50      | area=   all | maxDets=100]",
    "map75": "AP  @[IoU=0.75      | area=   all | maxDets=100]",
    "map_small": "AP  @[IoU=0.50:0.95 | area= small | maxDets=100]",
    "map_medium": "AP  @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "map_large": "AP  @[IoU=0.50:0.95 | area= large | maxDets=100]",
    "mar1": "AR  @[IoU=0.50:0.95 | area=   all | maxDets=  1]",
    "mar10": "AR  @[IoU=0.50:0.95 | area=   all | maxDets= 10]",
    "mar100": "AR  @[IoU=0.50:0.95 | area=   all | maxDets=100]",
    "mar_small": "AR  @[IoU=0.50:0.95 | area= small | maxDets=100]",
    "mar_medium": "AR  @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "mar_large": "AR  @[IoU=0.50:0.95 | area= large | maxDets=100]",
}
BACKENDS = ("pycocotools", "faster_coco_eval")


class CocoEvaluation(NamedTuple):
    """The named stats and what a PR curve is drawn from.

    `precision` is COCOeval's accumulated array, indexed [IoU threshold, recall threshold,
    category, area range (all, small, medium, large), max detections (1, 10, 100)]; it is
    -1 where a category has no ground truth in that area range.
    """

    stats: dict[str, float]
    precision: np.ndarray
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    category_ids: list

    def pr_curve(self, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """(recall, precision) at IoU `iou`, all areas, 100 detections, averaged over categories.

        Categories without ground truth (precision -1) are left out of the mean, as
        COCOeval leaves them out of AP, so the area under this curve is AP at `iou`.
        """
        hits = np.flatnonzero(np.isclose(self.iou_thresholds, iou))
        if not len(hits):
            valid = ", ".join(f"{t:.2f}" for t in self.iou_thresholds)
            raise UserError(f"iou {iou} is not one of COCOeval's thresholds ({valid}); pick one of them.")
        curves = self.precision[hits[0], :, :, 0, -1]  # [recall threshold, category]
        present = curves[0] > -1
        if not present.any():
            return self.recall_thresholds.copy(), np.zeros_like(self.recall_thresholds)
        return self.recall_thresholds.copy(), curves[:, present].mean(axis=1)


def coco_evaluation(
    gt: dict | str | Path,
    results: list | str | Path,
    iou_type: str = "bbox",
    backend: str = "pycocotools",
    image_ids: Sequence | None = None,
) -> CocoEvaluation:
    """Evaluate COCO-format `results` against `gt` (dicts/lists, or json paths) with `backend`.

    `image_ids` restricts the evaluation to those images (as `params.imgIds` does);
    results on other images are then ignored, as COCOeval ignores them.
    """
    if iou_type not in IOU_TYPES:
        raise unknown_choice("iou type", iou_type, IOU_TYPES)
    run = _backend(backend)
    truth = load_ground_truth(gt, iou_type)
    detections = load_results(results, truth, iou_type)
    images = check_image_ids(image_ids, truth)
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and summary
        evaluator = run(truth, detections, iou_type, images)
    stats = [float(s) for s in evaluator.stats[: len(STAT_NAMES)]]
    params = evaluator.params
    return CocoEvaluation(
        dict(zip(STAT_NAMES, stats)),
        np.asarray(evaluator.eval["precision"]),
        np.asarray(params.iouThrs),
        np.asarray(params.recThrs),
        list(params.catIds),
    )


def evaluate_coco(
    gt: dict | str | Path,
    results: list | str | Path,
    iou_type: str = "bbox",
    backend: str = "pycocotools",
    image_ids: Sequence | None = None,
) -> dict[str, float]:
    """The 12 COCOeval stats by name (STAT_NAMES), fractions in [0, 1]; -1 where undefined.

    COCOeval reports -1 for a stat no ground truth falls under (e.g. AP_small when no
    object is small); it is passed through, not turned into 0.
    """
    return coco_evaluation(gt, results, iou_type, backend, image_ids).stats


def precision_recall(
    gt: dict | str | Path,
    results: list | str | Path,
    iou_type: str = "bbox",
    iou: float = 0.5,
    backend: str = "pycocotools",
) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) averaged over categories at IoU `iou`: the PR curve to plot."""
    return coco_evaluation(gt, results, iou_type, backend).pr_curve(iou)


def _backend(name: str):
    """The function that runs one backend, or a one-line error naming the valid ones."""
    if name not in BACKENDS:
        raise unknown_choice("backend", name, BACKENDS)
    if name == "faster_coco_eval":
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError:
            raise UserError(
                "backend 'faster_coco_eval' is not installed; pip install faster-coco-eval "
                "(or use the pycocotools backend)."
            ) from None
        return _run_faster_coco_eval
    return _run_pycocotools


def _run_pycocotools(gt: dict, results: list[dict], iou_type: str, image_ids: list | None) -> Any:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco_gt = COCO()  # COCO(path) only reads files; the checked dict is indexed directly
    coco_gt.dataset = gt
    coco_gt.createIndex()
    evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
    return _evaluate(evaluator, image_ids)


def _run_faster_coco_eval(gt: dict, results: list[dict], iou_type: str, image_ids: list | None) -> Any:
    from faster_coco_eval import COCO, COCOeval_faster

    def quiet(*_args, **_kwargs) -> None:
        return None

    coco_gt = COCO(gt, print_function=quiet)
    evaluator = COCOeval_faster(coco_gt, coco_gt.loadRes(results), iou_type, print_function=quiet)
    return _evaluate(evaluator, image_ids)


def _evaluate(evaluator: Any, image_ids: list | None) -> Any:
    if image_ids is not None:
        evaluator.params.imgIds = image_ids
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator
