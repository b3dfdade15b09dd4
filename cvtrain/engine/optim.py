"""Optimizers and learning-rate schedules, built from the optimizer and scheduler configs.

Every schedule is a multiplier of the base learning rate per optimizer step, with a
linear warm-up in front: one LambdaLR covers them all and resumes exactly from its
state dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from cvtrain.errors import unknown_choice


def _adamw(params, cfg):
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


def _adam(params, cfg):
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


def _sgd(params, cfg):
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


def _rmsprop(params, cfg):
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, eps=cfg.eps, weight_decay=cfg.weight_decay)


OPTIMIZERS = {"adamw": _adamw, "adam": _adam, "sgd": _sgd, "rmsprop": _rmsprop}


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg) -> torch.optim.Optimizer:
    """The optimizer `cfg.name` over the parameters that require gradients."""
    if cfg.name not in OPTIMIZERS:
        raise unknown_choice("optimizer", cfg.name, OPTIMIZERS, "Pick one with optimizer=NAME.")
    trainable = [p for p in params if p.requires_grad]
    return OPTIMIZERS[cfg.name](trainable, cfg)


def _constant(progress: float, cfg) -> float:
    return 1.0


def _cosine(progress: float, cfg) -> float:
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _linear(progress: float, cfg) -> float:
    return 1 - (1 - cfg.min_lr_ratio) * progress


SCHEDULES: dict[str, Callable[[float, object], float]] = {
    "none": _constant,
    "cosine": _cosine,
    "onecycle": _cosine,  # warm-up (warmup_fraction) then cosine annealing
    "linear": _linear,
}


def lr_multiplier(cfg, total_steps: int) -> Callable[[int], float]:
    """Step -> learning-rate multiplier: linear warm-up, then the named schedule."""
    if cfg.name != "step" and cfg.name not in SCHEDULES:
        raise unknown_choice("scheduler", cfg.name, [*SCHEDULES, "step"], "Pick one with scheduler=NAME.")
    warmup = max(cfg.warmup_steps, int(cfg.warmup_fraction * total_steps))
    decay_steps = max(1, total_steps - warmup)

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.name == "step":
            return cfg.gamma ** ((step - warmup) // max(1, cfg.step_every))
        return SCHEDULES[cfg.name](min(1.0, (step - warmup) / decay_steps), cfg)

    return multiplier


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, total_steps: int) -> LambdaLR:
    return LambdaLR(optimizer, lr_multiplier(cfg, total_steps))
