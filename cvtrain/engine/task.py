"""The contract between a task and the trainer.

A task owns its models, data, losses, predictions and metrics; the trainer owns the
loop, devices, precision, distribution, checkpoints and logging. The trainer builds
the task's models, moves and wraps them (DDP, torch.compile, EMA), and hands the task
the modules to use in `self.active`: wrapped ones while training, plain or EMA ones
while evaluating. A task never loops, never calls backward and never touches devices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

StepFn = Callable[[str, torch.Tensor], None]


class Task:
    """Base class of every task; subclasses fill in the hooks they need."""

    name = "task"

    def __init__(self, cfg):
        self.cfg = cfg
        self.models: dict[str, nn.Module] = {}  # the plain modules (checkpoints, EMA)
        self.active: dict[str, nn.Module] = {}  # what steps call: set by the trainer
        self.device = torch.device("cpu")  # set by the trainer
        self.run_dir: Path | None = None  # set by the trainer: where a task may write its files (rank 0)
        self.global_step, self.epoch = 0, 0  # set by the trainer before each train_step

    # --- building -------------------------------------------------------------
    def build_models(self) -> dict[str, nn.Module]:
        """The task's modules by name, e.g. {"model": net} or {"generator": g, "discriminator": d}."""
        raise NotImplementedError

    def build_dataset(self, split: str):
        """The data set of `split` (train, val, test)."""
        raise NotImplementedError

    def collate(self) -> Callable[[list[Any]], Any] | None:
        """How samples become a batch; None for in-memory data (batched by indexing)."""
        return None

    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        """One optimizer per name; train_step steps each with step(name, loss)."""
        return {"main": [p for m in self.models.values() for p in m.parameters()]}

    def steps_per_training_step(self, name: str) -> float:
        """How often train_step steps optimizer `name` per training step: 3 for a critic
        stepped three times a batch, 0.2 for a generator stepped every fifth. Sizes that
        optimizer's LR schedule, which advances with its own steps."""
        return 1.0

    def optimizer_config(self, name: str, base):
        """The optimizer config for `name` (a GAN may give its discriminator another lr)."""
        return base

    # --- training -------------------------------------------------------------
    def train_step(self, batch: Any, step: StepFn) -> dict[str, torch.Tensor]:
        """Compute the losses of one batch, call step(name, loss) per optimizer, and return
        the detached values to log."""
        raise NotImplementedError

    # --- evaluation -----------------------------------------------------------
    def eval_batches(self, split: str, env) -> Iterable[Any] | None:
        """Evaluation input that is not a data set (analogy queries, noise seeds for a
        generator): an iterable of batches for this rank (`env.rank` of `env.world_size`),
        each passed to eval_step. None (the default): a loader over build_dataset(split)."""
        return None

    def start_eval(self, split: str) -> None:
        """Reset the metrics before evaluating `split` (val during training)."""

    def eval_step(self, batch: Any) -> None:
        """Predict one batch and feed the metrics."""
        raise NotImplementedError

    def finish_eval(self) -> dict[str, float]:
        """The metrics over the whole split, reduced across ranks."""
        return {}

    def monitor(self) -> tuple[str, str]:
        """(metric, "max" | "min") that picks checkpoints/best.pt."""
        return self.cfg.task.monitor, self.cfg.task.monitor_mode

    def save_outputs(self, out_dir: Path, tag: str) -> list[Path]:
        """Images of the last evaluation (rank 0 only): confusion matrices, samples, ..."""
        return []

    # --- prediction -----------------------------------------------------------
    def predict(self, out_dir: Path) -> list[dict[str, Any]]:
        """mode=predict: one record per input (from `input=` or `prompt=`), each with at
        least "input" and "prediction" (a string); images go to `out_dir`."""
        raise NotImplementedError

    # --- extra state saved with the checkpoint (a vocabulary, class names) -----
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    @property
    def model(self) -> nn.Module:
        """The module named "model", for single-model tasks."""
        return self.active["model"]
