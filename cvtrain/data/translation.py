"""Image-to-image translation data: the pix2pix and CycleGAN folder layouts.

A sample is {"a": uint8 (3, S, S), "b": uint8 (3, S, S)}: paired (pix2pix) or drawn
independently (CycleGAN). Both readers check the whole layout when they are built
(file headers only, no decoding), so a wrong folder or a malformed file fails at once
with one line naming it, not an epoch later.

- pix2pix ("aligned"): root/train, root/val, root/test, each file A and B side by side
  (width = 2 x height, A on the left); `direction` AtoB or BtoA says which is the input.
- CycleGAN ("unaligned"): root/trainA, root/trainB, root/testA, root/testB (val reads
  test, as CycleGAN's data sets have no val); the B image of sample i is drawn by a
  seeded permutation, so A and B are unpaired but an epoch is reproducible.

The builders of the `translation` family (dataset=shapes|aligned|unaligned) take
`paired`: what the model trains on (pix2pix needs pairs; CycleGAN takes either, and
ignores the pairing).
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset

from cvtrain.data.classification import _IMAGE_EXTENSIONS
from cvtrain.data.colorization import image_paths
from cvtrain.errors import UserError
from cvtrain.registry import DATASETS

DIRECTIONS = ("AtoB", "BtoA")
PIX2PIX_LAYOUT = "root/train, root/val, root/test holding images with A and B side by side"
CYCLEGAN_LAYOUT = "root/trainA, root/trainB, root/testA, root/testB"


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise UserError(f"direction: '{direction}' is not one of {', '.join(DIRECTIONS)}; pick direction=AtoB or BtoA.")


def _resized(image, size: int) -> torch.Tensor:
    from PIL import Image

    image = image.resize((size, size), Image.BICUBIC)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(size, size, 3)
    return pixels.permute(2, 0, 1).contiguous()


def _open(path: str):
    from cvtrain.data.image_files import open_rgb

    return open_rgb(path)


def _header_size(path: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except OSError as err:
        raise UserError(f"dataset: image '{path}' cannot be read ({err}); replace the file.") from None


def _folder(root: str, name: str, layout: str) -> list[str]:
    folder = os.path.join(root, name)
    if not os.path.isdir(folder):
        raise UserError(f"dataset.root: no folder '{folder}'; the layout is {layout}.")
    paths = image_paths(folder)
    if not paths:
        raise UserError(f"dataset.root: '{folder}' holds no image files ({', '.join(_IMAGE_EXTENSIONS)}); "
                        f"the layout is {layout}.")
    return paths


class AlignedPairs(Dataset):
    """pix2pix's layout: each file is A | B; `direction` BtoA swaps them."""

    def __init__(self, root: str, split: str, size: int, direction: str = "AtoB"):
        _check_direction(direction)
        self.paths, self.size, self.swap = _folder(root, split, PIX2PIX_LAYOUT), size, direction == "BtoA"
        for path in self.paths:
            width, height = _header_size(path)
            if width != 2 * height:
                raise UserError(f"dataset: '{path}' is {width}x{height}, but in the pix2pix layout each image is A "
                                f"and B side by side, two squares of equal size ({2 * height}x{height} here); "
                                "fix or remove the file.")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = _open(self.paths[index])
        half = image.width // 2
        a = _resized(image.crop((0, 0, half, image.height)), self.size)
        b = _resized(image.crop((half, 0, image.width, image.height)), self.size)
        return {"a": b, "b": a} if self.swap else {"a": a, "b": b}


class UnalignedDomains(Dataset):
    """CycleGAN's layout: domain A and domain B folders of one split, unpaired."""

    def __init__(self, root: str, split: str, size: int, seed: int = 0, swap: bool = False):
        folder = "train" if split == "train" else "test"
        self.a = _folder(root, f"{folder}A", CYCLEGAN_LAYOUT)
        self.b = _folder(root, f"{folder}B", CYCLEGAN_LAYOUT)
        if swap:  # direction=BtoA: B is the input domain
            self.a, self.b = self.b, self.a
        self.size = size
        self.b_order = torch.randperm(len(self.b), generator=torch.Generator().manual_seed(seed)).tolist()

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))  # CycleGAN's epoch: the larger domain, the other wraps

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        a = self.a[index % len(self.a)]
        b = self.b[self.b_order[index % len(self.b)]]
        return {"a": _resized(_open(a), self.size), "b": _resized(_open(b), self.size)}


# --- ShapesWorld ----------------------------------------------------------------------

SHAPES_PAIRS = ("labels", "edges")


def shapes_pairs(cfg, split: str, pairs: str = "labels", direction: str = "AtoB"):
    """Paired ShapesWorld: A = the semantic label map in the segmentation palette
    (`labels`) or the instance edges (`edges`, white on black), B = the rendered image."""
    import numpy as np

    from cvtrain.data.memory import InMemoryDataset
    from cvtrain.data.shapes import load
    from cvtrain.tasks.palette import palette

    if pairs not in SHAPES_PAIRS:
        raise UserError(f"pairs: '{pairs}' is not one of {', '.join(SHAPES_PAIRS)}; pick labels or edges.")
    _check_direction(direction)
    data = load(cfg, split)
    source = palette()[data.semantic] if pairs == "labels" else np.repeat(data.edges[..., None], 3, axis=-1)
    a = torch.from_numpy(np.ascontiguousarray(source)).permute(0, 3, 1, 2).contiguous()
    b = torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous()
    fields = {"a": b, "b": a} if direction == "BtoA" else {"a": a, "b": b}
    # scene_output: the output side is the rendered scene whose semantic mask is `mask`,
    # so a ShapesWorld segmenter can score generated images (the FCN-score)
    return InMemoryDataset({**fields, "mask": torch.from_numpy(np.ascontiguousarray(data.semantic))}, in_channels=3,
                           scene_output=direction == "AtoB")


def shapes_domains(cfg, split: str, direction: str = "AtoB"):
    """Unpaired ShapesWorld: A = flat-coloured renderings of the even scenes, B = striped
    renderings of the odd ones (different scenes, so no pair exists); BtoA swaps them."""
    from cvtrain.data.memory import InMemoryDataset
    from cvtrain.data.shapes import load

    _check_direction(direction)
    data = load(cfg, split)
    n = len(data) // 2
    a = torch.from_numpy(data.images[0 : 2 * n : 2]).permute(0, 3, 1, 2).contiguous()
    b = torch.from_numpy(data.striped[1 : 2 * n : 2]).permute(0, 3, 1, 2).contiguous()
    return InMemoryDataset({"a": b, "b": a} if direction == "BtoA" else {"a": a, "b": b}, in_channels=3)


# --- the translation task's data sets -----------------------------------------------------


@DATASETS.register("shapes", family="translation")
def shapes_translation(cfg, split: str, paired: bool = True):
    """ShapesWorld: dataset.pairs (labels|edges) -> image for pix2pix, flat -> striped for CycleGAN."""
    if paired:
        return shapes_pairs(cfg, split, cfg.pairs, cfg.direction)
    return shapes_domains(cfg, split, cfg.direction)


def _folder_root(cfg, layout: str) -> str:
    from cvtrain.data.classification import _root

    root = _root(cfg)
    if not root or not os.path.isdir(root):
        what = "is required but not set" if not root else f"'{root}' is not a folder"
        raise UserError(f"dataset.root {what}; pass dataset.root=PATH, a folder laid out as {layout}.")
    return root


@DATASETS.register("aligned", family="translation")
def aligned_folder(cfg, split: str, paired: bool = True) -> AlignedPairs:
    """pix2pix's layout under dataset.root (CycleGAN trains on it too, ignoring the pairs)."""
    from cvtrain.data.classification import _check_split

    _check_split(split)
    return AlignedPairs(_folder_root(cfg, PIX2PIX_LAYOUT), split, cfg.image_size, cfg.direction)


@DATASETS.register("unaligned", family="translation")
def unaligned_folder(cfg, split: str, paired: bool = False) -> UnalignedDomains:
    """CycleGAN's layout under dataset.root; BtoA swaps the domains."""
    from cvtrain.data.classification import _check_split

    if paired:
        raise UserError("dataset=unaligned (the CycleGAN layout) has no pairs, and model=pix2pix trains on pairs; "
                        "use dataset=aligned (A | B side by side) or model=cyclegan.")
    _check_split(split)
    return UnalignedDomains(_folder_root(cfg, CYCLEGAN_LAYOUT), split, cfg.image_size, int(cfg.get("seed", 0)),
                            swap=cfg.direction == "BtoA")
