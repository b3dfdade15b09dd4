"""Scores of generated images against real ones: FID, KID, improved precision / recall.

The scorers take feature arrays (N x D, numpy) or FID statistics (mu, sigma), so they stay
numpy-only and testable against the reference formulas; `features` turns images into
those arrays (torch, imported only when it is used).
"""

from __future__ import annotations

from .frechet import frechet_distance, statistics
from .kid import kernel_inception_distance
from .precision_recall import precision_recall

__all__ = ["frechet_distance", "kernel_inception_distance", "precision_recall", "statistics"]
