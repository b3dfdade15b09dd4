"""Sample grids as plain images (one pixel per pixel, no plot around them) and a GIF
of them over training: what people watch while a generative model learns."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch


def tile(images: torch.Tensor, cols: int, pad: int = 2) -> torch.Tensor:
    """uint8 (N, C, H, W) -> one (C, H', W') image, `cols` per row, `pad` pixels apart."""
    n, c, h, w = images.shape
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    grid = torch.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), 255, dtype=torch.uint8)
    for i, image in enumerate(images):
        top, left = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        grid[:, top : top + h, left : left + w] = image
    return grid


def _pil(image: torch.Tensor):
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def save_grid(images: torch.Tensor, path: Path, cols: int = 8, pad: int = 2) -> Path:
    """The images as one PNG grid, written atomically (a viewer never sees half a file);
    one image with pad=0 is that image's PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _pil(tile(images, cols, pad)).save(partial, format="PNG")
    os.replace(partial, path)
    return path


def append_gif_frame(png: Path, gif: Path, frame_ms: int = 400) -> Path:
    """Add the grid `png` as the last frame of `gif` (created if missing)."""
    from PIL import Image, ImageSequence

    frames = []
    if gif.is_file():
        with Image.open(gif) as old:
            frames = [frame.convert("RGB") for frame in ImageSequence.Iterator(old)]
    with Image.open(png) as new:
        frames.append(new.convert("RGB"))
    partial = gif.with_name(f".{gif.name}.{os.getpid()}.tmp")
    frames[0].save(partial, format="GIF", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    os.replace(partial, gif)
    return gif
