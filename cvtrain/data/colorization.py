"""Colorization data sets: colour images whose L channel is the input and ab the target.

A sample is {"image": uint8 (3, S, S)}; the task converts to Lab on the device.

- `shapes`: ShapesWorld's colorization domain (cvtrain.data.shapesworld.colours):
  equal-lightness hues that follow shape and texture 70 % of the time.
- `image_folder`: any photos: every image file under dataset.root (recursively,
  sorted), or under root/train, root/val (and root/test) when those exist; otherwise a
  seeded dataset.val_fraction of the files is val (and test). Resized to
  dataset.image_size squared, read lazily.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.data import Dataset

from cvtrain.data.classification import _IMAGE_EXTENSIONS, _check_split, _image_size, _read_image, _root, _val_fraction
from cvtrain.data.memory import InMemoryDataset
from cvtrain.errors import UserError
from cvtrain.registry import DATASETS


@DATASETS.register("shapes", family="colorization")
def shapes_colorization(cfg: Any, split: str) -> InMemoryDataset:
    from cvtrain.data.shapes import SPLITS
    from cvtrain.data.shapesworld import ShapesWorldSpec
    from cvtrain.data.shapesworld.colours import load_colour_split

    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; ShapesWorld has {', '.join(SPLITS)}.")
    sizes = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}
    spec = ShapesWorldSpec(image_size=cfg.image_size, min_objects=cfg.min_objects, max_objects=cfg.max_objects,
                           seed=cfg.seed)
    images = load_colour_split(split, sizes[split], spec, cache_dir=cfg.cache_dir)
    return InMemoryDataset({"image": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()}, in_channels=3)


class PhotoFiles(Dataset):
    """Image files read on access, as uint8 (3, size, size)."""

    in_channels = 3

    def __init__(self, paths: list[str], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": _read_image(self.paths[index], self.size)}


def image_paths(folder: str) -> list[str]:
    """Every image file under `folder`, recursively, sorted; hidden files left out."""
    return sorted(os.path.join(d, f) for d, _, files in os.walk(folder, followlinks=True) for f in files
                  if f.lower().endswith(_IMAGE_EXTENSIONS) and not f.startswith("."))


def photo_splits(root: str, frac: float, seed: int) -> dict[str, list[str]]:
    """{split: paths}: root/train, root/val, root/test when present, else a seeded split of root."""
    if os.path.isdir(os.path.join(root, "train")):
        splits = {"train": image_paths(os.path.join(root, "train"))}
        val = os.path.join(root, "val")
        if os.path.isdir(val):
            splits["val"] = image_paths(val)
            test = os.path.join(root, "test")
            splits["test"] = image_paths(test) if os.path.isdir(test) else splits["val"]
            return splits
        paths = splits["train"]
    else:
        paths = image_paths(root)
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(seed)).tolist()
    held = max(1, round(frac * len(paths))) if len(paths) > 1 else 0
    val = sorted(paths[i] for i in order[:held])
    return {"train": sorted(paths[i] for i in order[held:]), "val": val, "test": val}


@DATASETS.register("image_folder", family="colorization")
def photo_folder(cfg: Any, split: str) -> PhotoFiles:
    """Any photos under dataset.root (see the module docstring)."""
    _check_split(split)
    root = _root(cfg)
    if not root or not os.path.isdir(root):
        what = "is required but not set" if not root else f"'{root}' is not a folder"
        raise UserError(f"dataset.root {what}; pass dataset.root=PATH, a folder of photos (any layout).")
    splits = photo_splits(root, _val_fraction(cfg), int(cfg.get("seed", 0)))
    if not splits[split]:
        raise UserError(f"dataset.root: the {split} split of '{root}' holds no image files "
                        f"({', '.join(_IMAGE_EXTENSIONS)}); add photos or lower dataset.val_fraction.")
    return PhotoFiles(splits[split], _image_size(cfg))
