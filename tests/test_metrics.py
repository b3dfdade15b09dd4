"""Classification metrics against scikit-learn, batch by batch and across two gloo ranks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import run_gloo_ranks
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, top_k_accuracy_score

from cvtrain.metrics.classification import ConfusionMatrix, TopKAccuracy


def _random_batches(seed: int, num_classes: int, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for size in sizes:
        logits = torch.randn(size, num_classes, generator=generator)
        labels = torch.randint(0, num_classes, (size,), generator=generator)
        batches.append((logits, labels))
    return batches


def _concat(batches):
    return torch.cat([b[0] for b in batches]).numpy(), torch.cat([b[1] for b in batches]).numpy()


def _sklearn_topk(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # k >= n_classes: sklearn warns that the score is perfect
        return top_k_accuracy_score(labels, logits, k=k, labels=np.arange(logits.shape[1]))


# --- TopKAccuracy -----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("num_classes", [6, 10, 37])
def test_topk_accuracy_matches_sklearn_over_incremental_batches(seed, num_classes):
    rng = np.random.default_rng(seed)
    sizes = [int(s) for s in rng.integers(1, 80, size=int(rng.integers(2, 7)))]
    batches = _random_batches(1000 * seed + num_classes, num_classes, sizes)
    metric = TopKAccuracy((1, 5), num_classes)
    for logits, labels in batches:
        metric.update(logits, labels)
    result = metric.compute()
    logits, labels = _concat(batches)
    assert set(result) == {"acc1", "acc5"}
    assert result["acc1"] == pytest.approx(_sklearn_topk(logits, labels, 1), abs=1e-12)
    assert result["acc5"] == pytest.approx(_sklearn_topk(logits, labels, 5), abs=1e-12)
    assert 0.0 <= result["acc1"] <= result["acc5"] <= 1.0


def test_topk_accuracy_counts_correct_and_total_exactly():
    metric = TopKAccuracy((1, 5), 10)
    batches = _random_batches(7, 10, [33, 1, 64, 17])
    for logits, labels in batches:
        metric.update(logits, labels)
    logits, labels = _concat(batches)
    assert float(metric.state["total"]) == len(labels)
    top1 = (logits.argmax(1) == labels).sum()
    assert float(metric.state["correct"][0]) == top1


def test_topk_accuracy_learns_nothing_from_a_reset():
    metric = TopKAccuracy((1, 5), 10)
    for logits, labels in _random_batches(3, 10, [50, 50]):
        metric.update(logits, labels)
    metric.reset()
    batches = _random_batches(4, 10, [40, 9])
    for logits, labels in batches:
        metric.update(logits, labels)
    logits, labels = _concat(batches)
    assert metric.compute()["acc1"] == pytest.approx(_sklearn_topk(logits, labels, 1), abs=1e-12)
    assert float(metric.state["total"]) == 49


@pytest.mark.parametrize("num_classes", [3, 4])
@pytest.mark.parametrize("seed", range(3))
def test_topk_accuracy_drops_k_larger_than_the_number_of_classes(num_classes, seed):
    metric = TopKAccuracy((1, 5), num_classes)
    assert metric.topk == (1,)
    batches = _random_batches(seed, num_classes, [25, 40, 7])
    for logits, labels in batches:
        metric.update(logits, labels)
    result = metric.compute()
    logits, labels = _concat(batches)
    assert set(result) == {"acc1"}, "acc5 is meaningless with fewer than 5 classes"
    assert result["acc1"] == pytest.approx(_sklearn_topk(logits, labels, 1), abs=1e-12)


def test_topk_accuracy_with_exactly_k_classes_is_perfect_at_k():
    batches = _random_batches(11, 5, [30, 30])
    metric = TopKAccuracy((1, 5), 5)
    for logits, labels in batches:
        metric.update(logits, labels)
    logits, labels = _concat(batches)
    result = metric.compute()
    assert result["acc5"] == 1.0 == _sklearn_topk(logits, labels, 5)
    assert result["acc1"] == pytest.approx(_sklearn_topk(logits, labels, 1), abs=1e-12)


def test_topk_accuracy_with_other_ks_matches_sklearn():
    batches = _random_batches(5, 12, [100, 23])
    metric = TopKAccuracy((1, 2, 3, 10), 12)
    for logits, labels in batches:
        metric.update(logits, labels)
    logits, labels = _concat(batches)
    result = metric.compute()
    for k in (1, 2, 3, 10):
        assert result[f"acc{k}"] == pytest.approx(_sklearn_topk(logits, labels, k), abs=1e-12), k


# --- ConfusionMatrix --------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("num_classes", [2, 6, 13])
def test_confusion_matrix_matches_sklearn(seed, num_classes):
    rng = np.random.default_rng(seed)
    metric = ConfusionMatrix(num_classes)
    all_pred, all_true = [], []
    for _ in range(int(rng.integers(2, 6))):
        size = int(rng.integers(1, 120))
        # labels from a skewed distribution, so some classes may be missing entirely
        true = rng.choice(num_classes, size=size, p=rng.dirichlet(np.ones(num_classes) * 0.5))
        pred = np.where(rng.random(size) < 0.4, true, rng.integers(0, num_classes, size))
        metric.update(torch.from_numpy(pred), torch.from_numpy(true))
        all_pred.append(pred)
        all_true.append(true)
    pred, true = np.concatenate(all_pred), np.concatenate(all_true)
    expected = confusion_matrix(true, pred, labels=list(range(num_classes)))
    matrix = metric.matrix()
    assert matrix.shape == (num_classes, num_classes)
    np.testing.assert_array_equal(matrix.numpy(), expected)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("num_classes", [2, 6, 10])
def test_balanced_accuracy_matches_sklearn_when_every_class_appears(seed, num_classes):
    rng = np.random.default_rng(100 + seed)
    size = 300
    true = rng.choice(num_classes, size=size, p=rng.dirichlet(np.ones(num_classes) * 2))
    true[:num_classes] = np.arange(num_classes)  # every class appears at least once
    pred = np.where(rng.random(size) < 0.5, true, rng.integers(0, num_classes, size))
    metric = ConfusionMatrix(num_classes)
    for chunk in np.array_split(np.arange(size), 4):
        metric.update(torch.from_numpy(pred[chunk]), torch.from_numpy(true[chunk]))
    result = metric.compute()
    assert set(result) == {"balanced_acc"}
    assert result["balanced_acc"] == pytest.approx(balanced_accuracy_score(true, pred), abs=1e-12)


def test_balanced_accuracy_leaves_out_absent_classes_as_sklearn_does():
    rng = np.random.default_rng(7)
    true = rng.choice([0, 1, 3], size=200)  # classes 2 and 4 never occur as labels...
    pred = np.where(rng.random(200) < 0.6, true, rng.integers(0, 5, 200))  # ...but are predicted
    metric = ConfusionMatrix(5)
    metric.update(torch.from_numpy(pred), torch.from_numpy(true))
    with pytest.warns(UserWarning):  # scikit-learn warns about the predicted-only classes
        expected = balanced_accuracy_score(true, pred)
    assert metric.compute()["balanced_acc"] == pytest.approx(expected, abs=1e-12)


def test_confusion_matrix_accepts_column_shaped_tensors_on_the_metric_device():
    metric = ConfusionMatrix(3)
    metric.update(torch.tensor([[0], [1], [2], [2]]), torch.tensor([[0], [2], [2], [1]]))
    np.testing.assert_array_equal(metric.matrix().numpy(), [[1, 0, 0], [0, 0, 1], [0, 1, 1]])
    assert metric.compute()["balanced_acc"] == pytest.approx((1 + 0 + 0.5) / 3)


# --- two gloo ranks ---------------------------------------------------------------

NUM_CLASSES = 8
SHARD_SIZES = ([57, 31, 12], [40, 3])  # unequal shards: ranks see different sample counts


def _shards():
    batches = _random_batches(2024, NUM_CLASSES, [s for sizes in SHARD_SIZES for s in sizes])
    first = len(SHARD_SIZES[0])
    return batches[:first], batches[first:]


def _rank_body(rank: int) -> dict:
    """One rank: score its own shard, then the all-reduced totals."""
    accuracy, confusion = TopKAccuracy((1, 5), NUM_CLASSES), ConfusionMatrix(NUM_CLASSES)
    for logits, labels in _shards()[rank]:
        accuracy.update(logits, labels)
        confusion.update(logits.argmax(1), labels)
    local_total = float(accuracy.state["total"])
    return {
        **accuracy.compute(),
        **confusion.compute(),
        "matrix": confusion.matrix().tolist(),
        "local_total_before": local_total,
        "local_total_after": float(accuracy.state["total"]),
    }


def test_metric_state_reduced_over_two_gloo_ranks_equals_the_single_process_score(tmp_path):
    results = run_gloo_ranks(_rank_body, tmp_path)

    union = [b for shard in _shards() for b in shard]
    logits, labels = _concat(union)
    single_acc, single_conf = TopKAccuracy((1, 5), NUM_CLASSES), ConfusionMatrix(NUM_CLASSES)
    for lg, lb in union:
        single_acc.update(lg, lb)
        single_conf.update(lg.argmax(1), lb)
    single = {**single_acc.compute(), **single_conf.compute()}
    assert single["acc1"] == pytest.approx(_sklearn_topk(logits, labels, 1), abs=1e-12)
    assert single["acc5"] == pytest.approx(_sklearn_topk(logits, labels, 5), abs=1e-12)

    for rank, result in enumerate(results):
        for key in ("acc1", "acc5", "balanced_acc"):
            assert result[key] == pytest.approx(single[key], abs=1e-12), (rank, key)
        np.testing.assert_array_equal(np.array(result["matrix"]), single_conf.matrix().numpy())
        assert np.array(result["matrix"]).sum() == len(labels)
        local = sum(SHARD_SIZES[rank])
        assert result["local_total_before"] == result["local_total_after"] == local, "compute() must not change local counts"
