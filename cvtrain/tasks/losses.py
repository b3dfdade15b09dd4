"""Loss builders by name, so a config can switch a task's loss (`loss=...`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cvtrain.errors import UserError
from cvtrain.registry import LOSSES


@LOSSES.register("cross_entropy", family="classification")
def cross_entropy(cfg) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)


class SegmentationLoss(nn.Module):
    """Pixel-wise cross-entropy, plus `dice_weight` x soft Dice, over the labelled pixels.

    Pixels labelled `ignore_index` (VOC's object borders, COCO's crowds) count in neither
    term. The cross-entropy is the mean over labelled pixels (0 when a batch has none,
    rather than torch's NaN). Dice is the multi-class soft Dice of the whole batch,
    1 - mean over classes of (2 sum(p t) + 1) / (sum(p) + sum(t) + 1), with p the softmax
    and t the one-hot labels: it weighs every class equally however few pixels it has,
    which is what mIoU rewards and what plain cross-entropy, dominated by the background,
    does not.
    """

    def __init__(self, ignore_index: int = 255, dice_weight: float = 0.0, label_smoothing: float = 0.0):
        super().__init__()
        self.ignore_index, self.dice_weight, self.label_smoothing = ignore_index, dice_weight, label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (B, C, H, W), target (B, H, W) class indices or ignore_index."""
        logits = logits.float()
        valid = target != self.ignore_index
        count = valid.sum().clamp(min=1)
        ce = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="sum",
                             label_smoothing=self.label_smoothing) / count
        if not self.dice_weight:
            return ce
        return ce + self.dice_weight * soft_dice_loss(logits, target, valid)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the soft Dice of the batch's `valid` pixels (see SegmentationLoss)."""
    classes = logits.shape[1]
    probs = logits.softmax(dim=1) * valid.unsqueeze(1)
    onehot = F.one_hot(torch.where(valid, target, 0), classes).permute(0, 3, 1, 2) * valid.unsqueeze(1)
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    cardinality = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * intersection + smooth) / (cardinality + smooth)).mean()


def _segmentation_loss(cfg) -> nn.Module:
    dice = float(cfg.dice_weight)
    if dice < 0:
        raise UserError(f"loss.dice_weight: must be >= 0, got {dice}; try loss.dice_weight=1.0.")
    return SegmentationLoss(int(cfg.ignore_index), dice, float(cfg.label_smoothing))


@LOSSES.register("cross_entropy", family="segmentation")
def segmentation_cross_entropy(cfg) -> nn.Module:
    """Cross-entropy over labelled pixels (+ loss.dice_weight x Dice when set)."""
    return _segmentation_loss(cfg)


@LOSSES.register("ce_dice", family="segmentation")
def segmentation_ce_dice(cfg) -> nn.Module:
    """Cross-entropy + Dice (conf/loss/ce_dice.yaml sets loss.dice_weight=1)."""
    return _segmentation_loss(cfg)
