"""PSNR and SSIM of restored images against the originals (super-resolution's scores).

Both take float images in [0, 1], shape (N, C, H, W), and return one value per image, so
a split's score is the mean over images (summed per rank, then reduced). SSIM is Wang et
al. (2004) as their reference code computes it: an 11x11 Gaussian window (σ = 1.5) over
'valid' positions, K1 = 0.01, K2 = 0.03, data range 1, per channel, then averaged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(images: torch.Tensor, reference: torch.Tensor, floor: float = 1e-10) -> torch.Tensor:
    """10 log10(1 / MSE) per image, in dB (an exact copy: 100 dB)."""
    mse = (images.double() - reference.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp(min=floor))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords**2 / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(images: torch.Tensor, reference: torch.Tensor, size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM per image (images smaller than the window use a window of their size)."""
    x, y = images.double(), reference.double()
    c = x.shape[1]
    size = min(size, x.shape[-1], x.shape[-2])
    window = gaussian_window(size, sigma).to(x.device).expand(c, 1, size, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = k1**2, k2**2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.flatten(1).mean(1)
