"""Differentiable augmentation for GANs (DiffAugment; Zhao et al., NeurIPS 2020).

A discriminator trained on a few thousand images memorises them: its real/fake verdict
stops carrying information that helps the generator, and a conditional generator's
classes blur together. DiffAugment applies the same random, differentiable transforms
to real and generated images every time the discriminator sees them, in the
discriminator's step and in the generator's, so the generator is never pushed to
produce augmented-looking images (the transforms sit between G and D, and gradients
flow through them back to G).

The policy (task.diff_augment) is a list of the paper's three transforms, in its order:
``color`` (random brightness, saturation and contrast), ``translation`` (a shift of up
to 1/8 of the side, zero-filled) and ``cutout`` (a zeroed square of half the side).
Images are in [-1, 1]; each transform draws its parameters per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: Sequence[str]) -> tuple[str, ...]:
    """['color', 'translation'] -> ('color', 'translation'); an unknown name is a one-line error."""
    from cvtrain.errors import unknown_choice

    for name in policy:
        if name not in POLICIES:
            raise unknown_choice("task.diff_augment transform", name, POLICIES,
                                 "Give a list, e.g. task.diff_augment=[color,translation,cutout]")
    return tuple(policy)


def diff_augment(images: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """images (N, C, H, W) in [-1, 1] -> the same transforms' output, differentiable in images."""
    for name in policy:
        images = _TRANSFORMS[name](images)
    return images


def _uniform(images: torch.Tensor) -> torch.Tensor:
    """One U(0, 1) draw per image, shaped to broadcast over (C, H, W)."""
    return torch.rand(len(images), 1, 1, 1, dtype=images.dtype, device=images.device)


def color(images: torch.Tensor) -> torch.Tensor:
    """Brightness ±0.5, saturation ×[0, 2], contrast ×[0.5, 1.5] (the paper's ranges)."""
    images = images + (_uniform(images) - 0.5)
    mean = images.mean(dim=1, keepdim=True)
    images = (images - mean) * (_uniform(images) * 2) + mean
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * (_uniform(images) + 0.5) + mean


def translation(images: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio × its side in x and y; what moves in is zeros."""
    n, _, h, w = images.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), device=images.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), device=images.device)
    rows = torch.arange(h, device=images.device).view(1, h, 1)
    cols = torch.arange(w, device=images.device).view(1, 1, w)
    # Index into an image padded by one zero pixel: a source outside the image reads the pad.
    y = (rows + dy + 1).clamp(0, h + 1).expand(n, h, w)
    x = (cols + dx + 1).clamp(0, w + 1).expand(n, h, w)
    padded = F.pad(images, [1, 1, 1, 1])
    batch = torch.arange(n, device=images.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, y, x].permute(0, 3, 1, 2)


def cutout(images: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero a square of ratio × the side at a random centre (it may stick out of the image)."""
    n, _, h, w = images.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=images.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=images.device)
    rows = torch.arange(h, device=images.device).view(1, h, 1)
    cols = torch.arange(w, device=images.device).view(1, 1, w)
    top, left = cy - ch // 2, cx - cw // 2
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return images * (~inside).unsqueeze(1).to(images.dtype)


_TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}
