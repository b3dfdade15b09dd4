"""word2vec's loss, summed over examples, so that one SGD step with lr alpha makes the
update word2vec.c makes for them: for a score s and label y, the gradient of
-log sigmoid(+-s) is -(y - sigmoid(s)), word2vec's g / alpha.

Two ways to the same number. `example_loss` scores each example's rows (gathered);
`count_loss` takes, for a small vocabulary, how often each (input word, output row)
pair occurs with label 1 and with label 0 in an update, and scores every pair once
with one matrix product: the same sum, and the same gradients, for a fraction of the
work when the pairs repeat (ShapesWorld's 70 words).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from cvtrain.tasks.word2vec_examples import Examples, Targets


def example_loss(scores: dict[str, torch.Tensor], targets: dict[str, Targets]) -> torch.Tensor:
    """Summed logistic loss of each objective's (n, c) scores against its targets."""
    return _total([F.binary_cross_entropy_with_logits(scores[name], t.labels, t.weights, reduction="sum")
                   for name, t in targets.items()])


def count_loss(scores: dict[str, torch.Tensor], counts: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The same sum from (V, R) scores of every pair and, per pair, the share of label 1
    and the count (`as_targets`): one fused op per objective, as updates are many and small."""
    return _total([F.binary_cross_entropy_with_logits(scores[name], share, total, reduction="sum")
                   for name, (share, total) in counts.items()])


def as_targets(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 2, V, R) counts by label -> the share of label 1 and the total, (..., V, R)
    each: -(n1 log s + n0 log(1 - s)) = -(n1 + n0) (p log s + (1 - p) log(1 - s))."""
    total = counts.sum(-3)
    return counts.select(-3, 1) / total.clamp(min=1), total


def pair_counts(examples: Examples, name: str, chunks: int, inputs: int, rows: int) -> torch.Tensor:
    """(chunks, 2, inputs, rows): per chunk, the weight of each (input word, output row)
    pair of objective `name` with label 0 and 1, from one bincount."""
    t = examples.targets[name]
    width = t.rows.shape[1]
    chunk = examples.chunks.unsqueeze(1).expand(-1, width)
    word = examples.inputs.unsqueeze(1).expand(-1, width)
    key = ((chunk * 2 + t.labels.long()) * inputs + word) * rows + t.rows
    size = chunks * 2 * inputs * rows
    return torch.bincount(key.flatten(), t.weights.flatten(), minlength=size).view(chunks, 2, inputs, rows).float()


def _total(losses: list[torch.Tensor]) -> torch.Tensor:
    """The sum without `sum()`'s leading 0 + loss: one op (and autograd node) less per update."""
    return losses[0] if len(losses) == 1 else torch.stack(losses).sum()
