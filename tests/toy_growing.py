"""A toy network that grows a block at epoch 2, as a progressive GAN grows a resolution.

Imported by tests/test_phases.py, and run as a script (one process per rank) for the
DDP test: `python tests/toy_growing.py RUN_DIR RANK WORLD PORT [STALL_EPOCH]`. With
STALL_EPOCH, every rank writes RUN_DIR/stalled.<rank> at that epoch's second batch and
waits there to be killed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from toy_tasks import Regression
from torch import nn

from cvtrain.data.memory import InMemoryDataset
from cvtrain.engine.task import ModulePolicy

GROW_AT_EPOCH = 2
ARGS = [
    "optimizer=adam", "optimizer.lr=0.01", "scheduler=cosine", "dataset.batch_size=16", "trainer.epochs=4",
    "trainer.ema_decay=0.9", "trainer.progress=none", "trainer.device=cpu", "logger.images=false",
]


class GrowingNet(nn.Module):
    """stem -> residual blocks (one more per phase) -> head."""

    def __init__(self):
        super().__init__()
        self.stem, self.blocks, self.head = nn.Linear(4, 8), nn.ModuleList(), nn.Linear(8, 1)

    def grow(self) -> None:
        self.blocks.append(nn.Linear(8, 8))

    def forward(self, x):
        h = torch.tanh(self.stem(x))
        for block in self.blocks:
            h = h + torch.tanh(block(h))
        return self.head(h)


class Growing(Regression):
    """Regression whose model gains a block from epoch 2 on, on a larger data set."""

    name = "growing"
    stall_epoch: int | None = None
    crash_at: tuple[int, int] | None = None  # (epoch, global step): raise there, as a crashed run would stop

    def build_models(self):
        torch.manual_seed(0)
        return {"model": GrowingNet()}

    def build_dataset(self, split):
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        x = torch.randn(64 + 32 * self.phase, self.features, generator=g)  # phase 1: six batches an epoch, not four
        return InMemoryDataset({"x": x, "y": x.sum(1, keepdim=True)})

    def phase_at(self, epoch):
        return 1 if epoch >= GROW_AT_EPOCH else 0

    def enter_phase(self, phase, models):
        for model in models.values():
            model.grow()

    def module_policy(self, name):
        return ModulePolicy(find_unused_parameters=True)

    def train_step(self, batch, step):
        if self.crash_at == (self.epoch, self.global_step):
            raise RuntimeError("crash")
        if self.stall_epoch == self.epoch and self.batches_this_epoch() == 1:
            (self.run_dir / f"stalled.{os.environ.get('RANK', '0')}").write_text("")
            time.sleep(600)
        return super().train_step(batch, step)

    def batches_this_epoch(self) -> int:
        first = sum(4 if e < GROW_AT_EPOCH else 6 for e in range(self.epoch))
        return self.global_step - first


def _run_rank(run_dir: str, rank: int, world: int, port: int, stall_epoch: int | None) -> None:
    from conftest import compose_cfg

    from cvtrain.engine.distributed import DistEnv
    from cvtrain.engine.trainer import Trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    cfg = compose_cfg(ARGS)
    task = Growing(cfg)
    task.stall_epoch = stall_epoch
    Trainer(cfg, task, Path(run_dir), env=DistEnv(rank, rank, world)).fit()


if __name__ == "__main__":
    directory, rank_, world_, port_ = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    _run_rank(directory, rank_, world_, port_, int(sys.argv[5]) if len(sys.argv) > 5 else None)
