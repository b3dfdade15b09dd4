"""The Pascal VOC folder layout, shared by its segmentation and detection readers.

    ROOT/JPEGImages/<id>.jpg
    ROOT/SegmentationClass/<id>.png          palette PNG: index = class, 255 = border (ignored)
    ROOT/Annotations/<id>.xml                boxes (detection)
    ROOT/ImageSets/Segmentation/<split>.txt  one image id per line
    ROOT/ImageSets/Main/<split>.txt

`dataset.splits` maps cvtrain's train/val/test to VOC's file names (VOC has no public
test labels, so test reads val by default).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cvtrain.errors import UserError

# The 20 object classes, in the order of the SegmentationClass palette indices 1..20.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

IMAGE_SETS = {"segmentation": "Segmentation", "detection": "Main"}


def voc_root(cfg: Any) -> Path:
    """dataset.root as a folder that looks like VOC, or a one-line error naming the path."""
    if not cfg.root:
        raise UserError("dataset.root is required but not set; pass dataset.root=FOLDER of VOC (holding JPEGImages/).")
    root = Path(os.path.expanduser(str(cfg.root)))
    if not root.is_dir():
        raise UserError(f"dataset.root: no such folder '{root}'; point dataset.root at a VOC folder (e.g. VOC2012/).")
    if not (root / "JPEGImages").is_dir():
        raise UserError(f"dataset.root: '{root}' has no JPEGImages/ folder; point it at the VOC year folder "
                        "(e.g. VOCdevkit/VOC2012), not its parent.")
    return root


def split_ids(root: Path, kind: str, cfg: Any, split: str) -> list[str]:
    """The image ids of `split` for `kind` (segmentation | detection), from ImageSets/."""
    names = dict(cfg.splits)
    if split not in names:
        raise UserError(f"dataset.splits has no '{split}' entry; give one, e.g. dataset.splits.{split}=val.")
    path = root / "ImageSets" / IMAGE_SETS[kind] / f"{names[split]}.txt"
    if not path.is_file():
        raise UserError(f"dataset.root: no split file '{path}'; VOC lists each split's image ids there "
                        f"(or map the split to another file with dataset.splits.{split}=NAME).")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise UserError(f"dataset.root: split file '{path}' lists no image ids.")
    return ids


def class_names(cfg: Any) -> list[str]:
    """dataset.classes when given (a subset or a custom VOC-style data set), else the 20 VOC classes."""
    return list(cfg.classes) if cfg.classes else list(VOC_CLASSES)
