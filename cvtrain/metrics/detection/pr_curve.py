"""The precision-recall curve as an image, the plot people read next to the AP number."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_pr_curve(
    recall: np.ndarray, precision: np.ndarray, path: str | Path, label: str = "", title: str = ""
) -> Path:
    """Plot one (recall, precision) curve to `path` (PNG, PDF, SVG by extension); returns the path.

    matplotlib is imported here, not at module import, so scoring alone never pays for it.
    The legend shows the area under the curve, which for COCOeval's interpolated
    precision at 101 recall points is the AP the stats report.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recall, precision = np.asarray(recall, dtype=float), np.asarray(precision, dtype=float)
    if recall.shape != precision.shape or recall.ndim != 1:
        raise ValueError(f"recall {recall.shape} and precision {precision.shape} must be 1-d and of one length")
    area = float(precision.mean()) if precision.size else 0.0  # COCO's AP: the mean over its recall points
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(recall, precision, label=f"{label + ' ' if label else ''}AP {area:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(title or "precision-recall")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
