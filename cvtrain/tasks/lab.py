"""sRGB <-> CIE Lab (D65, 2° observer) in torch, on the device, for whole batches.

Colorization predicts a and b from L, so every step converts its batch; doing it in
torch keeps it on the GPU and in the graph. The constants and branches are
scikit-image's `rgb2lab` / `lab2rgb` (tests compare the two on random colours): sRGB
gamma, its XYZ matrix, the reference white (0.95047, 1, 1.08883), the cube root above
0.008856, and on the way back z clamped at 0 and RGB clipped to [0, 1].

Networks see L / 50 - 1 and ab / AB_SCALE, both about [-1, 1] (the tanh of a generator).
"""

from __future__ import annotations

import torch

XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
WHITE_D65 = (0.95047, 1.0, 1.08883)
AB_SCALE = 110.0  # |a|, |b| of sRGB colours stay below ~110 (pix2pix's colorization mode divides by 110)


def _matrix(x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    m = torch.tensor(XYZ_FROM_RGB, dtype=torch.float64, device=x.device)
    m = torch.linalg.inv(m) if inverse else m
    return torch.einsum("ij,bj...->bi...", m.to(x.dtype), x)


def _white(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(WHITE_D65, dtype=x.dtype, device=x.device).view(1, 3, *[1] * (x.dim() - 2))


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, ...) RGB in [0, 1] -> (B, 3, ...) L in [0, 100], a and b about [-110, 110]."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).clamp_min(0) ** 2.4, rgb / 12.92)
    xyz = _matrix(linear) / _white(rgb)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """(B, 3, ...) Lab -> (B, 3, ...) RGB in [0, 1] (out-of-gamut colours clipped)."""
    L, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    fy = (L + 16) / 116
    f = torch.stack([a / 500 + fy, fy, (fy - b / 200).clamp_min(0)], dim=1)
    xyz = torch.where(f > 0.2068966, f**3, (f - 16 / 116) / 7.787) * _white(lab)
    linear = _matrix(xyz, inverse=True)
    rgb = torch.where(linear > 0.0031308, 1.055 * linear.clamp_min(1e-12) ** (1 / 2.4) - 0.055, 12.92 * linear)
    return rgb.clamp(0, 1)


def split_lab(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 RGB (B, 3, H, W) -> (L / 50 - 1 (B, 1, H, W), ab / AB_SCALE (B, 2, H, W)), float32."""
    lab = rgb_to_lab(images.float() / 255)
    return lab[:, :1] / 50 - 1, lab[:, 1:] / AB_SCALE


def join_lab(light: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """The inverse of split_lab: normalised L and ab -> uint8 RGB (B, 3, H, W)."""
    lab = torch.cat([(light.float() + 1) * 50, ab.float() * AB_SCALE], dim=1)
    return (lab_to_rgb(lab) * 255).round().to(torch.uint8)


def gray_rgb(light: torch.Tensor) -> torch.Tensor:
    """Normalised L shown as a uint8 RGB image (a = b = 0): what the colorizer is given."""
    return join_lab(light, torch.zeros(light.shape[0], 2, *light.shape[2:], device=light.device))
