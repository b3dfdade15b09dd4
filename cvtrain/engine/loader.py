"""Batches for every rank: one sampler for shuffled training and sharded evaluation.

The batch size in the config is global. Each step, all ranks draw the same global batch
from one seeded permutation and each takes its share, so N processes see exactly the
batches one process would (DDP's averaged gradient then equals the one-process one).
Evaluation shards the data without padding, so every sample is scored exactly once.
In-memory data sets are batched by indexing whole tensors; others go through a
DataLoader with worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cvtrain.errors import UserError


class ShardedBatchSampler(Sampler[list[int]]):
    """Index batches for one rank: its share of each global batch."""

    def __init__(self, size: int, global_batch: int, rank: int, world: int, shuffle: bool, seed: int, drop_last: bool):
        if global_batch % world:
            raise UserError(
                f"dataset.batch_size={global_batch} does not split evenly over {world} processes; "
                f"use a multiple of {world}."
            )
        self.size, self.global_batch, self.rank, self.world = size, global_batch, rank, world
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch, self.start = 0, 0
        # Seeds the DataLoader's worker processes per epoch and rank, so they never draw
        # from (and shift) the global RNG: a resumed run's random streams stay the same.
        self.worker_seeds = torch.Generator()

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch `epoch` from its batch `start` (a run resumed mid-epoch)."""
        self.epoch, self.start = epoch, start
        self.worker_seeds.manual_seed(self.seed + 7919 * epoch + self.rank)

    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.size, self.global_batch)
        return full if self.drop_last or rest == 0 else full + 1

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        for b in range(self.start, self.batches_per_epoch()):
            batch = order[b * self.global_batch : (b + 1) * self.global_batch]
            yield batch[self.rank :: self.world].tolist()


class TensorBatchLoader:
    """Batches of an in-memory data set, gathered by one indexing op per field."""

    def __init__(self, dataset, batch_sampler: ShardedBatchSampler):
        self.dataset, self.batch_sampler = dataset, batch_sampler

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for indices in self.batch_sampler:
            yield self.dataset.batch(torch.as_tensor(indices, dtype=torch.long))


def build_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    train: bool,
    rank: int,
    world: int,
    seed: int,
    num_workers: int = 0,
    collate: Callable[[list[Any]], Any] | None = None,
    pin_memory: bool = False,
):
    """A loader for one rank: training shuffles and drops the last partial batch."""
    if len(dataset) == 0:
        raise UserError("the data set split is empty; check dataset.root and the split sizes.")
    if not train:
        batch_size = max(world, batch_size - batch_size % world)
    sampler = ShardedBatchSampler(
        len(dataset), batch_size, rank, world, shuffle=train, seed=seed, drop_last=train and len(dataset) >= batch_size
    )
    if hasattr(dataset, "batch") and collate is None:
        return TensorBatchLoader(dataset, sampler)
    return DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate,
        pin_memory=pin_memory, persistent_workers=num_workers > 0, generator=sampler.worker_seeds,
    )
