"""Perplexity (and bits per character) from summed negative log-likelihoods.

Perplexity = exp(total NLL / total tokens) over the whole split, in nats; bits per
character = total NLL / total characters / ln 2. Both reduce across ranks as sums.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

import torch

from cvtrain.metrics.base import SumMetric
from cvtrain.registry import METRICS


@METRICS.register("perplexity", family="language_modeling")
class Perplexity(SumMetric):
    def __init__(self, char_level: bool = False, device="cpu"):
        self.char_level = char_level
        super().__init__(device)

    def initial_state(self):
        return {"nll": torch.zeros((), dtype=torch.float64), "tokens": torch.zeros((), dtype=torch.float64)}

    def update(self, nll_sum: torch.Tensor, tokens: int | torch.Tensor) -> None:
        self.add(nll=nll_sum.detach().double(), tokens=torch.as_tensor(tokens, dtype=torch.float64))

    def score(self, state):
        mean = float(state["nll"]) / max(float(state["tokens"]), 1.0)
        result = {"loss": mean, "ppl": math.exp(min(mean, 700.0))}
        if self.char_level:
            result["bpc"] = mean / math.log(2)
        return result


def unigram_perplexity(train_ids: Iterable[int], eval_ids: Iterable[int], vocab_size: int) -> float:
    """The baseline a language model must beat: each token predicted by its training
    frequency alone (add-one smoothing, so unseen tokens have a finite cost)."""
    counts = Counter(train_ids)
    total = sum(counts.values()) + vocab_size
    eval_list = list(eval_ids)
    nll = -sum(math.log((counts.get(t, 0) + 1) / total) for t in eval_list)
    return math.exp(nll / max(len(eval_list), 1))
