"""Optimizers and learning-rate schedules, built from the optimizer and scheduler configs.

A task names its optimizers (parameter_groups); each is built from optimizer.* with
optimizers.<name>.* on top, so a GAN's discriminator can take another lr or type.
Every schedule is a multiplier of the base learning rate per optimizer step, with a
linear warm-up in front: one LambdaLR covers them all and resumes exactly from its
state dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.optim.lr_scheduler import LambdaLR

from cvtrain.errors import UserError, unknown_choice


def _adamw(groups, cfg):
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


def _adam(groups, cfg):
    return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


def _sgd(groups, cfg):
    """SGD; takes sparse gradients (nn.Embedding(sparse=True)) when weight_decay is 0."""
    return torch.optim.SGD(
        groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


def _rmsprop(groups, cfg):
    return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum, eps=cfg.eps, weight_decay=cfg.weight_decay)


def _adagrad(groups, cfg):
    """Adagrad, the classic optimizer of sparse embeddings (word2vec, GloVe)."""
    return torch.optim.Adagrad(groups, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay)


def _sparse_adam(groups, cfg):
    """Adam that updates only the embedding rows a batch used: sparse gradients only."""
    if cfg.weight_decay:
        raise UserError("optimizer sparse_adam has no weight decay: set its weight_decay=0.")
    return torch.optim.SparseAdam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


OPTIMIZERS = {
    "adamw": _adamw, "adam": _adam, "sgd": _sgd, "rmsprop": _rmsprop, "adagrad": _adagrad, "sparse_adam": _sparse_adam,
}


def settings_for(name: str, base, named: Mapping[str, Any]):
    """optimizer.* with the keys optimizers.<name>.* sets on top: a GAN's
    optimizers.discriminator.lr=4e-4 changes the discriminator's lr only."""
    own = {k: v for k, v in OmegaConf.to_container(named[name]).items() if v is not None} if name in named else {}
    return OmegaConf.merge(base, own) if own else base


def check_named(named: Mapping[str, Any], names: Iterable[str]) -> None:
    """optimizers.<name> must name one of the task's optimizers."""
    valid = list(names)
    for name in named:
        if name not in valid:
            raise unknown_choice("optimizers.<name>", name, valid, "Set the optimizers this task trains.")


def param_groups(params, cfg) -> list[dict[str, Any]]:
    """torch parameter groups over the parameters that require gradients. `params` is an
    iterable of parameters or of group dicts (the task's own settings, e.g. no decay on a
    temperature); with weight_decay_1d=false each group's 1-D parameters (biases, norm
    scales) go to a twin group without weight decay, as nanoGPT and timm do."""
    items = list(params)
    groups = [dict(g) for g in items] if items and isinstance(items[0], dict) else [{"params": items}]
    out: list[dict[str, Any]] = []
    for group in groups:
        trainable = [p for p in group["params"] if p.requires_grad]
        if cfg.weight_decay_1d or "weight_decay" in group:
            out.append({**group, "params": trainable})
            continue
        out.append({**group, "params": [p for p in trainable if p.ndim > 1]})
        out.append({**group, "params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0})
    return [g for g in out if g["params"]]


def build_optimizer(params, cfg, names: Mapping[int, str] | None = None, sparse: Collection[int] = ()) -> torch.optim.Optimizer:
    """The optimizer `cfg.name` over `params` (see param_groups). `names` maps parameter
    ids to their module paths and `sparse` holds the ids of parameters with sparse
    gradients (nn.Embedding(sparse=True)): SparseAdam takes only those, and says which
    parameter is wrong now rather than at its first step."""
    if cfg.name not in OPTIMIZERS:
        raise unknown_choice("optimizer", cfg.name, OPTIMIZERS, "Pick one with optimizer=NAME.")
    groups = param_groups(params, cfg)
    if cfg.name == "sparse_adam":
        dense = [p for g in groups for p in g["params"] if id(p) not in sparse]
        if dense:
            raise UserError(
                f"optimizer sparse_adam takes sparse gradients only, but {(names or {}).get(id(dense[0]), 'a parameter')} "
                "gets dense ones: give it another optimizer (optimizers.<name>.name=adam) or use nn.Embedding(sparse=True)."
            )
    return OPTIMIZERS[cfg.name](groups, cfg)


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
    cfg = _plain(cfg)  # the multiplier runs at every optimizer step; an OmegaConf read costs ~30 us
    warmup = max(cfg.warmup_steps, int(cfg.warmup_fraction * total_steps))
    decay_steps = max(1, total_steps - warmup)

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.name == "step":
            return cfg.gamma ** ((step - warmup) // max(1, cfg.step_every))
        return SCHEDULES[cfg.name](min(1.0, (step - warmup) / decay_steps), cfg)

    return multiplier


def _plain(cfg):
    """A plain-attribute copy of a DictConfig (other objects as they are)."""
    from types import SimpleNamespace

    from omegaconf import DictConfig

    return SimpleNamespace(**OmegaConf.to_container(cfg, resolve=True)) if isinstance(cfg, DictConfig) else cfg


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, total_steps: int, done_steps: int = 0) -> LambdaLR:
    """The schedule of `optimizer`, already `done_steps` in: an optimizer rebuilt at a
    phase change goes on where its predecessor was."""
    if done_steps <= 0:
        return LambdaLR(optimizer, lr_multiplier(cfg, total_steps))
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return LambdaLR(optimizer, lr_multiplier(cfg, total_steps), last_epoch=done_steps - 1)
