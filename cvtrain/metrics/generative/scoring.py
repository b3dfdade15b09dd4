"""`cvtrain-score fid`: read two inputs (image folders, feature or statistics .npz files),
compute every score they allow, and format them.

Image folders need a feature network, built once and only when a folder is given, so
two .npz files score without torch's models or any weights file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvtrain.errors import UserError

from .frechet import frechet_distance, statistics
from .kid import kernel_inception_distance
from .precision_recall import precision_recall

ONLY_FID = "KID and precision / recall need features: a mu/sigma statistics file allows FID only"


@dataclass
class Input:
    """One side of the comparison: features (N x D) when known, and FID statistics."""

    features: np.ndarray | None
    mu: np.ndarray
    sigma: np.ndarray


def score_paths(real: str, fake: str, features: str | None = None, weights: str | None = None,
                kid_subsets: int = 100, kid_subset_size: int = 1000, k: int = 3) -> tuple[dict, list[str]]:
    """({fid, kid_mean, kid_std, precision, recall} — those computable —, notes for the user)."""
    _check_options(kid_subsets, kid_subset_size, k)
    extractor = _lazy_extractor(features, weights)
    a, b = read_input(real, "--real", extractor), read_input(fake, "--fake", extractor)
    if a.mu.shape != b.mu.shape:
        raise UserError(f"--real has {len(a.mu)}-d features but --fake has {len(b.mu)}-d; "
                        "compute both with the same feature network.")
    scores = {"fid": frechet_distance(a.mu, a.sigma, b.mu, b.sigma)}
    if a.features is None or b.features is None:
        return scores, [ONLY_FID]
    scores["kid_mean"], scores["kid_std"] = kernel_inception_distance(a.features, b.features, kid_subsets,
                                                                      kid_subset_size)
    smallest = min(len(a.features), len(b.features))
    if k >= smallest:
        return scores, [f"precision / recall need more than k={k} samples per set, got {smallest}; lower --k"]
    scores["precision"], scores["recall"] = precision_recall(a.features, b.features, k=k)
    return scores, []


def _check_options(kid_subsets: int, kid_subset_size: int, k: int) -> None:
    for name, value in (("--kid-subsets", kid_subsets), ("--kid-subset-size", kid_subset_size), ("--k", k)):
        if value < 1:
            raise UserError(f"{name} must be a positive integer, got {value}.")
    if kid_subset_size < 2:
        raise UserError(f"--kid-subset-size must be at least 2, got {kid_subset_size}.")


def _lazy_extractor(kind: str | None, weights: str | None):
    """A function that builds the feature network on first call, then returns the same one."""
    built = []

    def get():
        if not built:
            from .features import build_extractor

            built.append(build_extractor(kind or ("inception" if weights else "shapesworld"), weights))
        return built[0]

    return get


def read_input(path: str, flag: str, extractor) -> Input:
    """An image folder (featurised), an .npz with `features`, or an .npz with `mu` and `sigma`."""
    p = Path(path)
    if p.is_dir():
        from .features import image_files

        files = image_files(p)  # before building the network: an empty folder fails at once
        return _from_features(extractor().extract_files(files), flag, path)
    if not p.is_file():
        raise UserError(f"{flag} '{path}' does not exist; give an image folder or an .npz file.")
    return _read_npz(p, flag)


def _read_npz(path: Path, flag: str) -> Input:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
    except Exception as err:  # not a zip, corrupt member, pickled arrays...
        raise UserError(f"{flag} '{path}' is not a readable .npz ({type(err).__name__}); "
                        "save it with numpy.savez.") from None
    if "features" in arrays:
        return _from_features(arrays["features"], flag, path)
    if "mu" in arrays and "sigma" in arrays:
        mu, sigma = np.atleast_1d(arrays["mu"].astype(np.float64)), np.atleast_2d(arrays["sigma"].astype(np.float64))
        if sigma.shape != (len(mu), len(mu)):
            raise UserError(f"{flag} '{path}': sigma is {sigma.shape} but mu has {len(mu)} entries.")
        return Input(None, mu, sigma)
    raise UserError(f"{flag} '{path}' has keys {sorted(arrays)}; it needs 'features' (N x D) or 'mu' and 'sigma'.")


def _from_features(features, flag: str, path) -> Input:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise UserError(f"{flag} '{path}': need at least 2 feature vectors (N x D), got shape {features.shape}.")
    if not np.isfinite(features).all():
        raise UserError(f"{flag} '{path}': the features hold NaN or infinite values.")
    mu, sigma = statistics(features)
    return Input(features, mu, sigma)


def format_scores(scores: dict, notes: list[str]) -> list[str]:
    """Lines of the text report; the scores that could not be computed say why."""
    lines = [f"{'FID':10s} {scores['fid']:.6f}"]
    if "kid_mean" in scores:
        lines.append(f"{'KID':10s} {scores['kid_mean']:.6f} ± {scores['kid_std']:.6f}")
    if "precision" in scores:
        lines += [f"{'precision':10s} {scores['precision']:.6f}", f"{'recall':10s} {scores['recall']:.6f}"]
    return lines + [f"({note})" for note in notes]
