"""Image-to-image scores: PSNR, SSIM and colourfulness, per image, summed across ranks.

- PSNR: 10 log10(R^2 / MSE) of one image against its target, the MSE over every pixel
  and channel (scikit-image's `peak_signal_noise_ratio` on one image).
- SSIM (Wang et al. 2004): the standard Gaussian window (sigma 1.5, 11 taps), K1 0.01,
  K2 0.03, population covariances, the mean of the SSIM map without the window's
  radius at the borders, channels averaged: scikit-image's `structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=R,
  channel_axis=0)`. The cropped border is exactly the filter's radius, so the map is
  computed on the valid region only and no padding convention enters.
- Colourfulness (Hasler and Süsstrunk 2003): rg = R - G, yb = (R + G) / 2 - B on
  0..255 values, M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2).
  About 0 for a grey image, 30-60 for ordinary photos.

A split's score is the mean of its images' scores (the convention of image-to-image
papers); `ImageQuality` keeps sums and a count, so ranks add theirs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cvtrain.metrics.base import SumMetric

SSIM_SIGMA, SSIM_TRUNCATE, SSIM_K1, SSIM_K2 = 1.5, 3.5, 0.01, 0.03


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """(N,) PSNR in dB of images (N, C, H, W); inf for an exact copy."""
    mse = (pred.double() - target.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian kernel (radius int(truncate * sigma + 0.5)), normalised."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (x / sigma) ** 2)
    return weights / weights.sum()


def _filter(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of (N, C, H, W) over the valid region (no padding)."""
    c = x.shape[1]
    rows = window.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    cols = window.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    return F.conv2d(F.conv2d(x, rows, groups=c), cols, groups=c)


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """(N,) mean SSIM of images (N, C, H, W), channels averaged (see the module docstring)."""
    window = gaussian_window().to(pred.device)
    if min(pred.shape[-2:]) < len(window):
        raise ValueError(f"SSIM's {len(window)}x{len(window)} window needs images at least that large, "
                         f"got {tuple(pred.shape[-2:])}")
    x, y = pred.double(), target.double()
    ux, uy = _filter(x, window), _filter(y, window)
    vx = _filter(x * x, window) - ux * ux
    vy = _filter(y * y, window) - uy * uy
    vxy = _filter(x * y, window) - ux * uy
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    smap = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return smap.flatten(2).mean(2).mean(1)


def colourfulness(images: torch.Tensor) -> torch.Tensor:
    """(N,) Hasler-Süsstrunk colourfulness of RGB images (N, 3, H, W) with values 0..255."""
    x = images.double().flatten(2)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    spread = torch.sqrt(rg.var(1, unbiased=False) + yb.var(1, unbiased=False))
    mean = torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return spread + 0.3 * mean


class ImageQuality(SumMetric):
    """Mean PSNR and SSIM of outputs against targets, and the colourfulness of both, over
    a split: uint8 RGB images in, scores of their 0..1 (PSNR, SSIM) and 0..255 values out.
    `prefix` names the scores of one direction (CycleGAN: 'a2b_psnr')."""

    def __init__(self, device="cpu", prefix: str = ""):
        self.prefix = prefix
        super().__init__(device)

    def initial_state(self):
        return {name: torch.zeros((), dtype=torch.float64) for name in ("psnr", "ssim", "colour", "colour_real", "n", "exact")}

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        out, real = output.float() / 255, target.float() / 255
        values = psnr(out, real)
        finite = torch.isfinite(values)  # an exact copy: no error to measure, left out of the mean
        self.add(psnr=values[finite].sum(), ssim=ssim(out, real).sum(), colour=colourfulness(output).sum(),
                 colour_real=colourfulness(target).sum(), n=torch.tensor(float(len(output))),
                 exact=(~finite).sum().double())

    def score(self, state) -> dict[str, float]:
        n = float(state["n"])
        if n == 0:
            return {}
        p = self.prefix
        measured = n - float(state["exact"])
        return {f"{p}psnr": float(state["psnr"]) / measured if measured else math.inf, f"{p}ssim": float(state["ssim"]) / n,
                f"{p}colourfulness": float(state["colour"]) / n, f"{p}colourfulness_real": float(state["colour_real"]) / n}
