"""Turning stored uint8 images into model inputs, and image files into stored form.

Data sets keep images as uint8 (4x less memory and host-to-device traffic than float);
the conversion to normalized floats happens on the device, inside the step.
"""

from __future__ import annotations

from pathlib import Path

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float, scaled to [0, 1] and standardized (ImageNet statistics
    for RGB, which pretrained torchvision backbones expect)."""
    x = images.float().div_(255)
    channels = x.shape[1]
    mean = IMAGENET_MEAN if channels == 3 else (0.5,) * channels
    std = IMAGENET_STD if channels == 3 else (0.5,) * channels
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(mean_t).div_(std_t)


def random_hflip(images: torch.Tensor, *paired: torch.Tensor):
    """Flip a random half of the batch left-right (on the device, no per-sample loop).

    Tensors in `paired` (segmentation masks (B, H, W)) flip with their images; then the
    flipped images and pairs come back as one tuple, else the images alone.
    """
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    flipped = tuple(torch.where(flip.view(-1, *[1] * (t.dim() - 1)), t.flip(-1), t) for t in (images, *paired))
    return flipped if paired else flipped[0]


def load_image(path: Path, size: int | None, channels: int) -> torch.Tensor:
    """An image file as uint8 (C, size, size), the way training data is stored; size None
    keeps the file's own size (detectors resize inside and answer in its pixels)."""
    from PIL import Image

    from cvtrain.errors import UserError

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if size is not None:
                image = image.resize((size, size), Image.BILINEAR)
            data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    except OSError as error:
        raise UserError(f"cannot read image '{path}' ({error}); pass image files (png, jpg, ...).") from error
    return data.view(image.height, image.width, channels).permute(2, 0, 1).contiguous()


def expand_inputs(pattern: str | None) -> list[Path]:
    """The files of `input=` for mode=predict: a file, a folder, or a glob."""
    import glob

    from cvtrain.errors import UserError

    if not pattern:
        raise UserError("mode=predict needs inputs: add input='photos/*.jpg' (a file, folder or glob).")
    path = Path(pattern).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file())
    else:
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not found:
        raise UserError(f"input='{pattern}' matches no file; pass a file, a folder or a quoted glob like 'photos/*.jpg'.")
    return found
