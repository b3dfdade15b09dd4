"""Class-index masks as pictures: the VOC colour palette, overlays and palette PNGs.

One palette serves everything: the overlays people look at and the PNG files
mode=predict writes, which are palette (mode "P") PNGs like VOC's SegmentationClass
files, so a pixel's value is its class index and any image viewer shows the colours.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

IGNORE_COLOUR = (255, 255, 255)  # ignored pixels (255) are drawn white


@lru_cache(maxsize=1)
def palette() -> np.ndarray:
    """uint8 (256, 3): VOC's colour map (bits of the index spread over R, G and B), so
    neighbouring class indices get clearly different colours; 0 (background) is black."""
    colours = np.zeros((256, 3), np.uint8)
    for index in range(256):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[index] = (r, g, b)
    colours[255] = IGNORE_COLOUR
    return colours


def overlay(image: torch.Tensor, mask: torch.Tensor, alpha: float = 0.7) -> torch.Tensor:
    """uint8 (3, H, W): the image with every non-background pixel blended with its class
    colour (ignored pixels white), so shape and label can be read at once."""
    colours = torch.from_numpy(palette()).to(image.device)[mask.long()].permute(2, 0, 1).float()
    blended = image.float() * (1 - alpha) + colours * alpha
    return torch.where(mask.unsqueeze(0) > 0, blended, image.float()).round().clamp(0, 255).to(torch.uint8)


def save_palette_png(mask: np.ndarray, path: Path) -> Path:
    """uint8 (H, W) class indices as a palette PNG (pixel value = class index)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(mask, np.uint8))  # mode L ...
    image.putpalette(palette().reshape(-1).tolist())  # ... becomes P, the values unchanged
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
