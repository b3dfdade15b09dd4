"""Semantic-segmentation data sets: an image and a class index per pixel (255: ignored).

Builders have the signature `build(cfg, split) -> Dataset`. A sample is
{"image": uint8 (3, S, S), "mask": uint8 (S, S)}: class 0 is the background, 1..n-1 the
objects, and `ignore_index` (255) marks pixels no loss or score counts (VOC's object
borders, COCO's crowds). Every data set has `class_names` (background first),
`ignore_index` and `in_channels`.

ShapesWorld comes back in memory (batched by indexing). VOC and COCO are read lazily
from disk and resized to dataset.image_size x dataset.image_size, the image bilinearly
and the mask by nearest neighbour (a blended label would be a class that is not there),
so their mIoU is measured at that size, not at the files' own resolution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cvtrain.data.coco import IGNORE, CocoInstances, split_paths
from cvtrain.data.image_files import first_missing, open_rgb, verify_images, wants_verify
from cvtrain.data.memory import InMemoryDataset
from cvtrain.data.voc import class_names as voc_class_names
from cvtrain.data.voc import split_ids, voc_root
from cvtrain.errors import UserError
from cvtrain.registry import DATASETS

BACKGROUND = "background"


@DATASETS.register("shapes", family="segmentation")
def shapes_segmentation(cfg: Any, split: str) -> InMemoryDataset:
    """ShapesWorld scenes and their semantic masks: 0 background, 1..6 the shapes."""
    from cvtrain.data.shapes import load
    from cvtrain.data.shapesworld import SHAPES

    data = load(cfg, split)
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous()
    masks = torch.from_numpy(np.ascontiguousarray(data.semantic))
    return InMemoryDataset({"image": images, "mask": masks}, class_names=[BACKGROUND, *SHAPES],
                           ignore_index=IGNORE, in_channels=3)


class MaskFiles(Dataset):
    """Images and masks read from disk on access, resized to `size` x `size`.

    `read_mask(i)` gives sample i's full-resolution uint8 mask; the class is shared by
    the VOC reader (palette PNGs) and the COCO one (masks painted from instances).
    """

    in_channels = 3
    ignore_index = IGNORE

    def __init__(self, image_paths: list[Path], class_names: list[str], size: int):
        self.image_paths, self.class_names, self.size = image_paths, class_names, size

    def __len__(self) -> int:
        return len(self.image_paths)

    def read_mask(self, i: int) -> tuple[np.ndarray, str]:
        """(uint8 (H, W) mask, where it came from, for error messages)."""
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        from PIL import Image

        mask, source = self.read_mask(i)
        check_mask(mask, len(self.class_names), source)
        image = open_rgb(self.image_paths[i])
        if image.size != (mask.shape[1], mask.shape[0]):
            raise UserError(f"dataset: image '{self.image_paths[i]}' is {image.size[0]}x{image.size[1]} but its mask "
                            f"{source} is {mask.shape[1]}x{mask.shape[0]}; the two must match.")
        image = image.resize((self.size, self.size), Image.BILINEAR)
        mask = Image.fromarray(mask).resize((self.size, self.size), Image.NEAREST)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(self.size, self.size, 3)
        return {"image": pixels.permute(2, 0, 1).contiguous(), "mask": torch.from_numpy(np.array(mask, np.uint8))}


def check_mask(mask: np.ndarray, num_classes: int, source: str) -> None:
    """Labels outside 0..n-1 that are not the ignore index would crash the loss with an
    index error deep in torch; name the file and the fix instead."""
    bad = (mask >= num_classes) & (mask != IGNORE)
    if bad.any():
        value = int(mask[bad][0])
        raise UserError(f"dataset: mask {source} has label {value}, outside the classes 0..{num_classes - 1} and "
                        f"not the ignore index {IGNORE}; fix the mask or list its classes with dataset.classes=[...].")


# --- Pascal VOC ---------------------------------------------------------------------


class VocSegmentation(MaskFiles):
    """ROOT/JPEGImages/<id>.jpg and ROOT/SegmentationClass/<id>.png (palette indices)."""

    def __init__(self, root: Path, ids: list[str], class_names: list[str], size: int, verify: bool = False):
        super().__init__([root / "JPEGImages" / f"{i}.jpg" for i in ids], class_names, size)
        self.mask_paths = [root / "SegmentationClass" / f"{i}.png" for i in ids]
        missing = first_missing(self.image_paths) or first_missing(self.mask_paths)  # a wrong folder shows at once
        if missing:
            raise UserError(f"dataset.root: '{missing}' is missing (listed in the split file); "
                            "restore it or remove its id from ImageSets/Segmentation/.")
        if verify:
            verify_images([*self.image_paths, *self.mask_paths], what="images and masks")

    def read_mask(self, i: int) -> tuple[np.ndarray, str]:
        from PIL import Image, UnidentifiedImageError

        path = self.mask_paths[i]
        try:
            with Image.open(path) as image:
                if image.mode not in ("P", "L"):
                    raise UserError(f"dataset: mask '{path}' is a {image.mode} image; VOC masks are palette (P) PNGs "
                                    "whose pixel values are class indices (255: border).")
                return np.array(image, dtype=np.uint8), f"'{path}'"
        except (OSError, UnidentifiedImageError) as err:
            raise UserError(f"dataset: cannot read mask '{path}' ({type(err).__name__}); replace it.") from None


@DATASETS.register("voc", family="segmentation")
def voc_segmentation(cfg: Any, split: str) -> VocSegmentation:
    """Pascal VOC segmentation: 21 classes (background + 20), or background + dataset.classes."""
    root = voc_root(cfg)
    ids = split_ids(root, "segmentation", cfg, split)
    return VocSegmentation(root, ids, [BACKGROUND, *voc_class_names(cfg)], int(cfg.image_size),
                           verify=wants_verify(cfg))


# --- COCO instances as semantic masks ------------------------------------------------


class CocoSegmentation(MaskFiles):
    """COCO instances painted into one mask per image: 0 background, category index + 1,
    255 under crowd regions (CocoInstances.semantic)."""

    def __init__(self, coco: CocoInstances, size: int):
        if len(coco.class_names) >= IGNORE:
            raise UserError(f"dataset.annotations: {len(coco.class_names)} categories do not fit uint8 masks with "
                            f"{IGNORE} as the ignore index; keep at most {IGNORE - 1}.")
        super().__init__([coco.path(i) for i in range(len(coco))], [BACKGROUND, *coco.class_names], size)
        self.coco = coco

    def read_mask(self, i: int) -> tuple[np.ndarray, str]:
        return self.coco.semantic(i), f"of image id {self.coco.image_id(i)} in '{self.coco.annotations_path}'"


@DATASETS.register("coco", family="segmentation")
def coco_segmentation(cfg: Any, split: str) -> CocoSegmentation:
    """A COCO instances json and its image folder (dataset.annotations, dataset.image_dir)."""
    annotations, image_dir = split_paths(cfg, split)
    coco = CocoInstances(annotations, image_dir, classes=cfg.classes, verify=wants_verify(cfg))
    return CocoSegmentation(coco, int(cfg.image_size))
