"""Small tasks for engine tests: a linear regression the trainer can fit in a second."""

from __future__ import annotations

import torch
from torch import nn

from cvtrain.data.memory import InMemoryDataset
from cvtrain.engine.task import Task


class Regression(Task):
    """Fit y = x.sum(1) (or y = 2x for one feature) with a linear model, scored by MSE."""

    name = "regression"
    features, samples = 4, 64

    def build_models(self):
        torch.manual_seed(0)
        return {"model": nn.Linear(self.features, 1)}

    def build_dataset(self, split):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(self.samples, self.features, generator=g)
        return InMemoryDataset({"x": x, "y": x.sum(1, keepdim=True) * (2 if self.features == 1 else 1)})

    def loss(self, batch) -> torch.Tensor:
        return nn.functional.mse_loss(self.model(batch["x"]), batch["y"])

    def train_step(self, batch, step):
        loss = self.loss(batch)
        step("main", loss)
        return {"loss": loss.detach()}

    def start_eval(self, split):
        self.errors = []

    def eval_step(self, batch):
        self.errors.append(self.loss(batch))

    def finish_eval(self):
        return {"mse": float(torch.stack(self.errors).mean())}

    def monitor(self):
        return "mse", "min"


class CrashOnce(Regression):
    """The regression, whose worker of rank $CRASH_RANK raises in its first batch of epoch 2,
    in the first attempt only (torch's agent counts restarts in TORCHELASTIC_RESTART_COUNT):
    a worker that fails once, for the restart tests. Without CRASH_RANK it never fails."""

    name = "crash_once"

    def train_step(self, batch, step):
        import os

        crash = os.environ.get("CRASH_RANK")
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if crash is not None and os.environ.get("RANK") == crash and first_attempt and self.epoch == 1:
            raise RuntimeError(f"injected crash on rank {crash}")
        return super().train_step(batch, step)
