"""The Fréchet distance between two Gaussians fitted to features: FID as pytorch-fid defines it.

    d² = ||mu1 - mu2||² + Tr(S1) + Tr(S2) - 2 Tr(sqrt(S1 S2))

pytorch-fid takes scipy.linalg.sqrtm of the non-symmetric product S1 S2. scipy is not a
runtime dependency here, and it need not be: S1 S2 is similar to the symmetric positive
semi-definite A = sqrt(S1) S2 sqrt(S1), so Tr(sqrt(S1 S2)) = sum(sqrt(eig(A))), which
`numpy.linalg.eigh` computes stably (no complex round-off to discard).
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of N x D features in float64, as pytorch-fid computes them
    (np.cov with rowvar=False: the unbiased N - 1 estimate)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need an N x D feature array with N >= 2, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """FID between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    As pytorch-fid does, when the trace of the square root cannot be computed (a
    non-finite result from a singular product) it is computed again with `eps` added to
    both diagonals.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(
            f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    diff = mu1 - mu2
    tr_covmean = trace_sqrt_product(sigma1, sigma2)
    if not np.isfinite(tr_covmean):
        log.warning("fid calculation produces singular product; adding %s to diagonal of cov estimates", eps)
        offset = np.eye(len(mu1)) * eps
        tr_covmean = trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr(sqrt(S1 S2)) for symmetric PSD S1, S2, via the eigenvalues of sqrt(S1) S2 sqrt(S1).

    Round-off can leave tiny negative eigenvalues where the true ones are 0; they are
    clipped to 0, since a covariance has none below 0.
    """
    root1 = _sqrt_psd(sigma1)
    product = root1 @ _symmetric(sigma2) @ root1
    eigenvalues = np.linalg.eigvalsh(_symmetric(product))
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric PSD matrix (negative round-off clipped)."""
    values, vectors = np.linalg.eigh(_symmetric(matrix))
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def _symmetric(matrix: np.ndarray) -> np.ndarray:
    """(M + Mᵀ) / 2: what eigh assumes, without trusting the caller's round-off."""
    return (matrix + matrix.T) / 2
