"""Contrastive losses over a batch of matching image and sentence embeddings.

Image i matches sentence i; every other sentence of the batch is a negative. Under DDP
the features are all-gathered with gradients, so the negatives span the global batch:
each rank scores its own rows against every rank's columns and averages over its rows,
and DDP's mean of the gradients is then exactly the one-process gradient on the global
batch (see all_gather_with_grad). Every loss takes (i2t, t2i, targets, epoch): the local
images' scores against all sentences, the local sentences' against all images, and the
column of each local row's match, and the epoch (a loss may change over training).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from cvtrain.engine.distributed import all_gather_with_grad
from cvtrain.registry import LOSSES


def cross_scores(image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(i2t, t2i, targets) of this rank's B pairs against the global batch (all ranks
    must hold B pairs)."""
    all_image, all_text = all_gather_with_grad(image), all_gather_with_grad(text)
    rank = dist.get_rank() if dist.is_initialized() else 0
    targets = torch.arange(image.shape[0], device=image.device) + rank * image.shape[0]
    return image @ all_text.T, text @ all_image.T, targets


def symmetric_cross_entropy(i2t: torch.Tensor, t2i: torch.Tensor, targets: torch.Tensor,
                            scale: torch.Tensor | float) -> torch.Tensor:
    """CLIP's loss and InfoNCE: the mean of the image->text and text->image cross-entropies
    of the similarities times `scale` (an inverse temperature)."""
    return (F.cross_entropy(i2t.float() * scale, targets) + F.cross_entropy(t2i.float() * scale, targets)) / 2


def hinge_violations(scores: torch.Tensor, targets: torch.Tensor, margin: float, max_violation: bool) -> torch.Tensor:
    """(B,) hinge costs margin + s(negative) - s(positive), over the hardest negative of
    each row (VSE++) or summed over all of them (VSE0)."""
    scores = scores.float()
    positive = scores.gather(1, targets.unsqueeze(1))
    cost = (margin + scores - positive).clamp(min=0)
    cost = cost.scatter(1, targets.unsqueeze(1), 0.0)  # the positive is no negative of itself
    return cost.max(dim=1).values if max_violation else cost.sum(dim=1)


class VSEHinge:
    """loss=vse_hinge: both directions' hinge costs, averaged over the batch (VSE++ sums
    them; the mean keeps the learning rate independent of the batch size).

    From random weights the hardest negative alone collapses every embedding to one point
    (the loss sits at 2 x margin: measured on ShapesWorld, chance recall after two
    epochs), so the first `warmup_epochs` sum over all negatives, as VSE-infinity's
    `vse_mean_warmup` does; hardest negatives take over from then on."""

    def __init__(self, margin: float, max_violation: bool, warmup_epochs: int = 0):
        self.margin, self.max_violation, self.warmup_epochs = margin, max_violation, warmup_epochs

    def __call__(self, i2t: torch.Tensor, t2i: torch.Tensor, targets: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        hardest = self.max_violation and epoch >= self.warmup_epochs
        return (hinge_violations(i2t, targets, self.margin, hardest)
                + hinge_violations(t2i, targets, self.margin, hardest)).mean()


class InfoNCE:
    """loss=infonce: symmetric cross-entropy at a fixed temperature."""

    def __init__(self, temperature: float):
        self.scale = 1.0 / temperature

    def __call__(self, i2t: torch.Tensor, t2i: torch.Tensor, targets: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        return symmetric_cross_entropy(i2t, t2i, targets, self.scale)


@LOSSES.register("vse_hinge", family="retrieval")
def vse_hinge(cfg) -> VSEHinge:
    return VSEHinge(float(cfg.margin), bool(cfg.max_violation), int(cfg.warmup_epochs))


@LOSSES.register("infonce", family="retrieval")
def infonce(cfg) -> InfoNCE:
    return InfoNCE(float(cfg.temperature))


def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over the global batch's similarities."""
    return symmetric_cross_entropy(*cross_scores(image, text), scale)
