"""The contract between a task and the trainer.

A task owns its models, data, losses, predictions and metrics; the trainer owns the
loop, devices, precision, distribution, checkpoints and logging. The trainer builds
the task's models, moves and wraps them (DDP, torch.compile, EMA), and hands the task
the modules to use in `self.active`: wrapped ones while training, plain or EMA ones
while evaluating. A task never loops, never calls backward and never touches devices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

StepFn = Callable[[str, torch.Tensor], None]


@dataclass(frozen=True)
class ModulePolicy:
    """How the trainer treats one of the task's modules. A GAN keeps an EMA of its
    generator only; a module whose steps leave some parameters without a gradient (a
    progressive GAN's faded-out block) needs DDP's unused-parameter search."""

    ema: bool = True  # keep an exponential moving average when trainer.ema_decay > 0
    compile: bool = True  # torch.compile it when trainer.compile
    find_unused_parameters: bool = False  # DDP: a step may leave some parameters without a gradient
    sync_buffers: bool = True  # DDP: rank 0's buffers (BatchNorm statistics) go to all before each forward


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
        self.phase = 0  # set by the trainer: the phase the models are in (see phase_at)

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

    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter] | list[dict[str, Any]]]:
        """One optimizer per name; train_step steps each with step(name, loss). A value is
        the parameters, or torch parameter-group dicts for settings of their own, e.g.
        [{"params": [logit_scale], "weight_decay": 0.0}, {"params": rest}]. The optimizer's
        settings come from optimizer.* with optimizers.<name>.* on top."""
        return {"main": [p for m in self.models.values() for p in m.parameters()]}

    def module_policy(self, name: str) -> ModulePolicy:
        """EMA, DDP and compile policy of module `name` (see ModulePolicy)."""
        return ModulePolicy()

    def steps_per_training_step(self, name: str) -> float:
        """How often train_step steps optimizer `name` per training step: 3 for a critic
        stepped three times a batch, 0.2 for a generator stepped every fifth. Sizes that
        optimizer's LR schedule, which advances with its own steps."""
        return 1.0

    def after_optimizer_step(self, name: str) -> None:
        """Called (without gradients) after optimizer `name` stepped: clamp CLIP's
        temperature, clip a WGAN critic's weights."""

    # --- phases (a progressive GAN grows its networks) -------------------------
    def phase_at(self, epoch: int) -> int:
        """The phase epoch `epoch` trains in; phases only grow and change between epochs.
        At a change the trainer calls enter_phase, then rebuilds optimizers (keeping the
        state of parameters that stay), DDP and compile wrappers, EMA copies and loaders
        (build_dataset may read self.phase: a larger resolution). A checkpoint records
        the phase, so a resumed run comes back in it."""
        return 0

    def enter_phase(self, phase: int, models: dict[str, nn.Module]) -> None:
        """Grow `models` (the task's modules, or a subset: their EMA copies) from phase
        `phase - 1` to `phase`, in place. New layers may start at random: the trainer
        copies the training weights into the EMA copies' new layers."""
        raise NotImplementedError(f"{type(self).__name__}.phase_at returned phase {phase} but enter_phase is missing")

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
