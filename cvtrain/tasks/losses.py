"""Loss builders by name, so a config can switch a task's loss (`loss=...`)."""

from __future__ import annotations

from torch import nn

from cvtrain.registry import LOSSES


@LOSSES.register("cross_entropy", family="classification")
def cross_entropy(cfg) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
