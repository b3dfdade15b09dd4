"""Colorization as classification (Zhang, Isola and Efros 2016, "Colorful Image Colorization").

- Bins: the ab plane cut into squares of `bin_size` (10), keeping those that some sRGB
  colour falls into: 261 bins here, from every 4th level of each RGB channel and 255
  (the same 261 as from all 16.7 million colours); the paper counts 313 with its own
  gamut estimate and bin edges.
- Soft encoding: a pixel's target is its 5 nearest bin centres weighted by a Gaussian
  of sigma 5 on their distance, normalised.
- Class rebalancing: p = the bins' empirical distribution over the training pixels,
  smoothed by a Gaussian of sigma 5 in ab; w ∝ 1 / ((1 - λ) p + λ / Q) with λ = 0.5,
  scaled so that E_p[w] = 1. Each pixel's loss is weighted by w of its nearest bin, so
  rare saturated colours count as much as the common greyish ones.
- Annealed mean: the decoded ab is the mean of the bin centres under the distribution
  re-tempered to z^(1/T) (T = 0.38): T = 1 is the mean (desaturated, like L2), T -> 0 the
  mode (vivid but patchy); 0.38 is the paper's compromise.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from cvtrain.tasks.lab import AB_SCALE, rgb_to_lab

NEIGHBOURS, SIGMA = 5, 5.0


@lru_cache(maxsize=4)
def gamut_bins(bin_size: float = 10.0) -> torch.Tensor:
    """(Q, 2) centres (in ab units) of the bins that sRGB colours reach, in raster order."""
    levels = torch.tensor([*range(0, 256, 4), 255], dtype=torch.float64) / 255
    rgb = torch.cartesian_prod(levels, levels, levels).T.reshape(1, 3, -1)
    ab = rgb_to_lab(rgb)[0, 1:].T
    index = torch.round(ab / bin_size).long()
    index = torch.unique(index, dim=0)  # sorted: raster order
    return index.double() * bin_size


class ABBins:
    """The bins, the soft encoding, the rebalancing weights and the annealed-mean decoding."""

    def __init__(self, bin_size: float = 10.0, rebalance: float = 0.5):
        self.centres = gamut_bins(float(bin_size)).float()  # ab units
        self.rebalance = float(rebalance)
        self.weights = torch.ones(len(self.centres))  # uniform until fit_prior

    def __len__(self) -> int:
        return len(self.centres)

    def _distances(self, ab: torch.Tensor) -> torch.Tensor:
        """(B, H, W, Q) squared distances of ab (B, 2, H, W, normalised) to the centres."""
        points = ab.permute(0, 2, 3, 1).float() * AB_SCALE
        return torch.cdist(points.reshape(-1, 2), self.centres.to(ab.device)).pow(2).view(*points.shape[:3], -1)

    def nearest(self, ab: torch.Tensor) -> torch.Tensor:
        """(B, H, W) index of each pixel's nearest bin."""
        return self._distances(ab).argmin(-1)

    def soft_targets(self, ab: torch.Tensor) -> torch.Tensor:
        """(B, Q, H, W): each pixel's 5 nearest bins, Gaussian-weighted, summing to 1."""
        dist = self._distances(ab)
        near, index = dist.topk(NEIGHBOURS, dim=-1, largest=False)
        weights = torch.softmax(-near / (2 * SIGMA**2), dim=-1)
        target = torch.zeros_like(dist).scatter_(-1, index, weights)
        return target.permute(0, 3, 1, 2)

    def fit_prior(self, images: torch.Tensor) -> None:
        """Rebalancing weights from uint8 RGB training images (N, 3, H, W)."""
        ab = rgb_to_lab(images.float() / 255)[:, 1:] / AB_SCALE
        counts = torch.bincount(self.nearest(ab).flatten(), minlength=len(self)).double()
        p = counts / counts.sum()
        kernel = torch.exp(-torch.cdist(self.centres.double(), self.centres.double()).pow(2) / (2 * SIGMA**2))
        smooth = kernel @ p
        smooth = smooth / smooth.sum()
        w = 1 / ((1 - self.rebalance) * smooth + self.rebalance / len(self))
        self.weights = (w / (smooth * w).sum()).float()

    def loss(self, logits: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """The rebalanced multinomial cross-entropy of logits (B, Q, H, W) against ab."""
        target = self.soft_targets(ab)
        per_pixel = -(target * F.log_softmax(logits.float(), dim=1)).sum(1)
        weight = self.weights.to(logits.device)[target.argmax(1)]
        return (weight * per_pixel).mean()

    def decode(self, logits: torch.Tensor, temperature: float = 0.38) -> torch.Tensor:
        """Annealed mean: normalised ab (B, 2, H, W) from logits (B, Q, H, W)."""
        tempered = torch.softmax(logits.float() / temperature, dim=1)  # z^(1/T), normalised
        return torch.einsum("bqhw,qc->bchw", tempered, self.centres.to(logits.device)) / AB_SCALE

    def state_dict(self) -> dict:
        return {"ab_weights": self.weights.clone()}

    def load_state_dict(self, state: dict) -> None:
        if "ab_weights" in state:
            self.weights = torch.as_tensor(state["ab_weights"]).float()
