"""Image grids with a caption under each image: predictions people look at, not read."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import torch


def save_image_grid(items: list[tuple[torch.Tensor, str]], path: Path, cols: int = 8, wrap: int = 0) -> Path:
    """uint8 (C, H, W) images with their titles, `cols` per row, as a PNG; `wrap` > 0
    wraps long titles (captions) at that many characters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(1, min(cols, len(items)))
    rows = max(1, math.ceil(len(items) / cols))
    cell = (3.2, 3.4) if wrap else (1.6, 1.8)
    fig, axes = plt.subplots(rows, cols, figsize=(cell[0] * cols, cell[1] * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, title) in zip(axes.flat, items):
        array = image.permute(1, 2, 0).numpy()
        gray = array.shape[-1] == 1
        ax.imshow(array.squeeze(-1) if gray else array, cmap="gray" if gray else None)
        if wrap:
            title = "\n".join(textwrap.fill(line, wrap) for line in title.split("\n"))
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
