"""Kernel Inception Distance (Bińkowski et al. 2018), as torch-fidelity computes it.

KID is the unbiased estimate of the squared MMD with the polynomial kernel
k(x, y) = (x·y / d + 1)³, averaged over random subsets: unlike FID it has no bias that
depends on the number of samples, so small sample sets can be compared. Defaults
(100 subsets of 1000) are those of torch-fidelity and the paper.
"""

from __future__ import annotations

import numpy as np


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """(x·y / d + coef0)^degree for every pair of rows, d = feature size (gamma = 1/d)."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² of two equal-size samples: within-set sums without the diagonal over
    m(m-1), the cross-set sum (diagonal included) over m², as torch-fidelity's mmd2."""
    m = len(x)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx)) + (k_yy.sum() - np.trace(k_yy))
    return float(within / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD² over `subsets` random subsets (without replacement)
    of each set; `subset_size` is capped at the smaller set so that small sets still score.
    Seeded, so the same features always give the same KID."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need two N x D feature arrays of the same D, got {real.shape} and {fake.shape}")
    size = min(subset_size, len(real), len(fake))
    if size < 2 or subsets < 1:
        raise ValueError(f"KID needs at least 2 samples per set and 1 subset, got {size} and {subsets}")
    rng = np.random.RandomState(seed)
    scores = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), size, replace=False)]
        y = fake[rng.choice(len(fake), size, replace=False)]
        scores.append(mmd2_unbiased(x, y))
    return float(np.mean(scores)), float(np.std(scores))
