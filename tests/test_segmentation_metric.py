"""Segmentation IoU against direct per-class counts, torchmetrics' definitions, and two gloo ranks.

The reference here counts, class by class over the whole set, the pixels of the
intersection and of the union with numpy loops (no confusion matrix), on random label
maps with ignored (255) pixels, a class that only the model predicts and a class that
neither the labels nor the predictions contain.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import run_gloo_ranks

from cvtrain.errors import UserError
from cvtrain.metrics.segmentation import SegmentationIoU

IGNORE = 255


def label_maps(seed: int, num_classes: int, shapes: list[tuple[int, int, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(pred, target) batches: target lacks the last two classes, pred never says the last one."""
    rng = np.random.default_rng(seed)
    labelled = np.arange(num_classes - 2)
    batches = []
    for shape in shapes:
        target = rng.choice(labelled, size=shape, p=rng.dirichlet(np.ones(len(labelled))))
        guess = rng.integers(0, num_classes - 1, size=shape)  # includes class n-2, never class n-1
        pred = np.where(rng.random(shape) < 0.6, target, guess)
        target = np.where(rng.random(shape) < 0.1, IGNORE, target)
        batches.append((pred, target))
    return batches


def direct_scores(batches, num_classes: int) -> dict[str, float]:
    """Per-class intersections and unions counted directly over every labelled pixel."""
    pred = np.concatenate([p.ravel() for p, _ in batches])
    target = np.concatenate([t.ravel() for _, t in batches])
    valid = target != IGNORE
    pred, target = pred[valid], target[valid]
    ious = []
    for c in range(num_classes):
        intersection = int(np.sum((pred == c) & (target == c)))
        union = int(np.sum((pred == c) | (target == c)))
        ious.append(intersection / union if union else math.nan)
    present = [v for v in ious if not math.isnan(v)]
    scores = {"pixel_acc": float(np.mean(pred == target)), "miou": sum(present) / len(present)}
    scores.update({f"iou_{c}": v for c, v in enumerate(ious)})
    return scores


def torchmetrics_style(batches, num_classes: int) -> tuple[float, float]:
    """MulticlassJaccardIndex(average='macro') and MulticlassAccuracy(average='micro'), ignore_index=255.

    As torchmetrics defines them: per-class tp, fp, fn from one-hot pixel counts,
    score tp / (tp + fp + fn), macro average weighting out classes with tp + fp + fn = 0;
    micro accuracy is sum(tp) / labelled pixels.
    """
    pred = torch.cat([torch.from_numpy(p).reshape(-1) for p, _ in batches])
    target = torch.cat([torch.from_numpy(t).reshape(-1) for _, t in batches])
    keep = target != IGNORE
    pred_1h = torch.nn.functional.one_hot(pred[keep], num_classes).double()
    target_1h = torch.nn.functional.one_hot(target[keep], num_classes).double()
    tp = (pred_1h * target_1h).sum(0)
    fp = (pred_1h * (1 - target_1h)).sum(0)
    fn = ((1 - pred_1h) * target_1h).sum(0)
    denominator = tp + fp + fn
    score = torch.where(denominator > 0, tp / denominator.clamp(min=1), torch.zeros_like(tp))
    weights = (denominator > 0).double()
    return float((score * weights).sum() / weights.sum()), float(tp.sum() / keep.sum())


def run_metric(batches, num_classes: int, **kwargs) -> SegmentationIoU:
    metric = SegmentationIoU(num_classes, **kwargs)
    for pred, target in batches:
        metric.update(torch.from_numpy(pred), torch.from_numpy(target))
    return metric


def assert_scores_equal(ours: dict, expected: dict) -> None:
    assert set(ours) == set(expected)
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(value, abs=1e-12), key


SHAPES = [(2, 17, 23), (1, 40, 9), (3, 8, 8)]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("num_classes", [4, 7, 21])
def test_scores_equal_direct_per_class_counts(seed, num_classes):
    batches = label_maps(seed, num_classes, SHAPES)
    ours = run_metric(batches, num_classes).compute()
    expected = direct_scores(batches, num_classes)
    assert math.isnan(expected[f"iou_{num_classes - 1}"]), "the last class must be absent from both"
    assert expected[f"iou_{num_classes - 2}"] == 0.0, "a predicted-only class has IoU 0 and counts in the mean"
    assert_scores_equal(ours, expected)


@pytest.mark.parametrize("seed", range(4))
def test_scores_equal_torchmetrics_definitions(seed):
    batches = label_maps(100 + seed, 9, SHAPES)
    ours = run_metric(batches, 9).compute()
    miou, accuracy = torchmetrics_style(batches, 9)
    assert ours["miou"] == pytest.approx(miou, abs=1e-12)
    assert ours["pixel_acc"] == pytest.approx(accuracy, abs=1e-12)


def test_matrix_counts_every_labelled_pixel_once():
    batches = label_maps(3, 5, SHAPES)
    matrix = run_metric(batches, 5).matrix()
    labelled = sum(int(np.sum(t != IGNORE)) for _, t in batches)
    assert matrix.dtype == torch.int64 and int(matrix.sum()) == labelled


def test_class_names_name_the_per_class_keys_and_ignore_index_is_configurable():
    pred = torch.tensor([[[0, 1], [2, 2]]])
    target = torch.tensor([[[0, 1], [2, 9]]])
    metric = SegmentationIoU(3, class_names=["sky", "traffic light", "road"], ignore_index=9)
    metric.update(pred, target)
    assert metric.compute() == {"pixel_acc": 1.0, "miou": 1.0, "iou_sky": 1.0, "iou_traffic_light": 1.0, "iou_road": 1.0}
    metric.reset()
    metric.update(pred, torch.tensor([[[0, 1], [2, 0]]]), ignore_index=IGNORE)
    scores = metric.compute()
    assert scores["iou_sky"] == 0.5 and scores["pixel_acc"] == 0.75
    assert scores["miou"] == pytest.approx((0.5 + 1 + 0.5) / 3)


def test_labels_outside_the_classes_are_a_user_error():
    metric = SegmentationIoU(3)
    with pytest.raises(UserError, match="label 7 is outside the classes 0..2"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 7], [1, 255]]]))


def test_registered_as_the_segmentation_iou_metric():
    from cvtrain.registry import METRICS

    assert METRICS.get("iou", ("segmentation",)) is SegmentationIoU


# --- two gloo ranks ---------------------------------------------------------------

NUM_CLASSES = 6
RANK_SHAPES = ([(2, 31, 17), (1, 9, 40)], [(3, 12, 12)])  # unequal shards


def _shards():
    batches = label_maps(2024, NUM_CLASSES, [s for shapes in RANK_SHAPES for s in shapes])
    first = len(RANK_SHAPES[0])
    return batches[:first], batches[first:]


def _rank_body(rank: int) -> dict:
    """One rank: count its own shard, then score the all-reduced matrix."""
    metric = run_metric(_shards()[rank], NUM_CLASSES)
    local = int(metric.state["matrix"].sum())
    result = {"scores": metric.compute(), "matrix": metric.matrix().tolist(), "local_before": local}
    result["local_after"] = int(metric.state["matrix"].sum())
    return result


def test_reduced_over_two_gloo_ranks_equals_the_single_process_score(tmp_path):
    results = run_gloo_ranks(_rank_body, tmp_path)

    union = [b for shard in _shards() for b in shard]
    single = run_metric(union, NUM_CLASSES)
    assert_scores_equal(single.compute(), direct_scores(union, NUM_CLASSES))
    for rank, result in enumerate(results):
        assert_scores_equal(result["scores"], single.compute())
        np.testing.assert_array_equal(np.array(result["matrix"]), single.matrix().numpy())
        local = sum(int(np.sum(t != IGNORE)) for _, t in _shards()[rank])
        assert result["local_before"] == result["local_after"] == local, "compute() must not change local counts"
