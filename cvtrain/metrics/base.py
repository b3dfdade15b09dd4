"""Metrics whose state is a few tensors of sums, so ranks combine them by all-reduce.

Accuracy counts, confusion matrices and IoU all reduce to sums: each rank counts its
shard, the counts are summed across ranks, and the score is computed once from the
totals, which equals the score over the whole split.
"""

from __future__ import annotations

import torch

from cvtrain.engine.distributed import all_reduce_sum


class SumMetric:
    """A metric whose whole state is named tensors that add up across batches and ranks."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.reset()

    def initial_state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def reset(self) -> None:
        self.state = {k: v.to(self.device) for k, v in self.initial_state().items()}

    def add(self, **counts: torch.Tensor) -> None:
        for key, value in counts.items():
            self.state[key] += value.to(self.state[key].dtype)

    def synced_state(self) -> dict[str, torch.Tensor]:
        """The state summed over all ranks (a copy; local counts stay as they are)."""
        return {k: all_reduce_sum(v.clone()) for k, v in self.state.items()}

    def compute(self) -> dict[str, float]:
        return self.score(self.synced_state())

    def score(self, state: dict[str, torch.Tensor]) -> dict[str, float]:
        raise NotImplementedError
