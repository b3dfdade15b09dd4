"""Pearson and Spearman correlation with numpy, as scipy.stats computes them.

scipy is not a dependency of cvtrain, and these two need only a few lines: Pearson
centres, scales by the largest deviation (against overflow), then takes the cosine of
the centred vectors, clipped to [-1, 1]; Spearman is Pearson on ranks, tied values all
getting the average of the ranks they span (scipy.stats.rankdata's 'average').
A constant input, or any NaN, gives NaN, as in scipy (which also warns).
"""

from __future__ import annotations

import numpy as np


def pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need two sequences of the same length, at least 2; got {len(x)} and {len(y)}")
    dx, dy = x - x.mean(), y - y.mean()
    if not (np.isfinite(dx).all() and np.isfinite(dy).all()):
        return float("nan")
    sx, sy = np.abs(dx).max(), np.abs(dy).max()
    if sx == 0.0 or sy == 0.0:
        return float("nan")
    dx, dy = dx / sx, dy / sy
    r = np.dot(dx / np.linalg.norm(dx), dy / np.linalg.norm(dy))
    return float(np.clip(r, -1.0, 1.0))


def spearman(x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    return pearson(average_ranks(x), average_ranks(y))


def average_ranks(values) -> np.ndarray:
    """Ranks 1..n; equal values share the mean of their ranks: [10, 20, 20] -> [1, 2.5, 2.5]."""
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts) - 1  # group of each sorted position
    bounds = np.r_[np.flatnonzero(starts), len(values)]
    mean_rank = 0.5 * (bounds[:-1] + 1 + bounds[1:])  # mean of ranks start+1 .. end
    ranks = np.empty(len(values))
    ranks[order] = mean_rank[group]
    return ranks
