"""Top-k accuracy and the confusion matrix, for classification.

Definitions as torchvision's reference scripts use them: a sample is top-k correct
when its label is among the k highest logits; accuracy is correct / samples, as a
fraction in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch

from cvtrain.metrics.base import SumMetric
from cvtrain.registry import METRICS


@METRICS.register("accuracy", family="classification")
class TopKAccuracy(SumMetric):
    """acc1, acc5, ...: the fraction of samples whose label is in the top k logits."""

    def __init__(self, topk: tuple[int, ...] = (1, 5), num_classes: int | None = None, device="cpu"):
        self.topk = tuple(k for k in topk if num_classes is None or k <= num_classes) or (1,)
        super().__init__(device)

    def initial_state(self):
        return {"correct": torch.zeros(len(self.topk), dtype=torch.float64), "total": torch.zeros((), dtype=torch.float64)}

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        top = logits.topk(max(self.topk), dim=1).indices
        hits = top.eq(labels.view(-1, 1))
        correct = torch.stack([hits[:, :k].any(dim=1).sum() for k in self.topk])
        self.add(correct=correct, total=torch.tensor(float(labels.numel()), device=labels.device))

    def score(self, state):
        total = max(float(state["total"]), 1.0)
        return {f"acc{k}": float(c) / total for k, c in zip(self.topk, state["correct"])}


@METRICS.register("confusion", family="classification")
class ConfusionMatrix(SumMetric):
    """Counts of (true class, predicted class); the image people read to see what is confused."""

    def __init__(self, num_classes: int, device="cpu"):
        self.num_classes = num_classes
        super().__init__(device)

    def initial_state(self):
        return {"matrix": torch.zeros(self.num_classes, self.num_classes, dtype=torch.float64)}

    def update(self, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        n = self.num_classes
        index = labels.view(-1).long() * n + predictions.view(-1).long()
        self.add(matrix=torch.bincount(index, minlength=n * n).view(n, n))

    def matrix(self) -> torch.Tensor:
        return self.synced_state()["matrix"].cpu()

    def score(self, state):
        matrix = state["matrix"]
        support = matrix.sum(1)
        present = support > 0  # as scikit-learn: classes with no true sample are left out
        recall = matrix.diag()[present] / support[present]
        return {"balanced_acc": float(recall.mean()) if bool(present.any()) else 0.0}


def save_confusion_image(matrix: torch.Tensor, class_names: list[str], path: Path, title: str = "") -> Path:
    """A row-normalized confusion matrix as a PNG, with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = matrix.numpy()
    rows = counts.sum(axis=1, keepdims=True)
    normalized = counts / (rows + (rows == 0))
    n = len(class_names)
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                color = "white" if normalized[i, j] > 0.5 else "black"
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
