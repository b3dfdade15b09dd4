"""Improved precision and recall (Kynkäänniemi et al. 2019).

Each set's manifold is the union of balls around its samples, each ball's radius the
distance to the sample's k-th nearest neighbour in the same set. Precision is the
fraction of fake samples inside the real manifold (are the fakes realistic?), recall
the fraction of real samples inside the fake manifold (do the fakes cover the data?).
Distances go through torch.cdist a block of rows at a time, so 10k x 10k sets need
only one block of the distance matrix in memory.
"""

from __future__ import annotations

import numpy as np

BLOCK = 1024  # rows of the distance matrix held at once: 1024 x 10k float64 = 80 MB


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, block: int = BLOCK) -> tuple[float, float]:
    """(precision, recall) of fake features against real ones, with k-NN radii."""
    import torch

    real_t = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    fake_t = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    if real_t.ndim != 2 or fake_t.ndim != 2 or real_t.shape[1] != fake_t.shape[1]:
        raise ValueError(
            f"need two N x D feature arrays of the same D, got {tuple(real_t.shape)} and {tuple(fake_t.shape)}"
        )
    if not 1 <= k < min(len(real_t), len(fake_t)):
        raise ValueError(f"k must be in [1, {min(len(real_t), len(fake_t)) - 1}] for these sets, got {k}")
    real_radii, fake_radii = knn_radii(real_t, k, block), knn_radii(fake_t, k, block)
    precision = inside_fraction(fake_t, real_t, real_radii, block)
    recall = inside_fraction(real_t, fake_t, fake_radii, block)
    return precision, recall


def knn_radii(points, k: int, block: int = BLOCK):
    """Distance of each point to its k-th nearest other point (the k+1-th smallest
    distance, the first being the point itself)."""
    import torch

    radii = [torch.cdist(points[i : i + block], points).kthvalue(k + 1, dim=1).values
             for i in range(0, len(points), block)]
    return torch.cat(radii)


def inside_fraction(queries, centres, radii, block: int = BLOCK) -> float:
    """Fraction of queries within radius of at least one centre."""
    import torch

    inside = 0
    for i in range(0, len(queries), block):
        distances = torch.cdist(queries[i : i + block], centres)
        inside += int((distances <= radii[None, :]).any(dim=1).sum())
    return inside / len(queries)
