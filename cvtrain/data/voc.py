"""The Pascal VOC folder layout, shared by its segmentation and detection readers.

    ROOT/JPEGImages/<id>.jpg
    ROOT/SegmentationClass/<id>.png          palette PNG: index = class, 255 = border (ignored)
    ROOT/Annotations/<id>.xml                boxes (detection)
    ROOT/ImageSets/Segmentation/<split>.txt  one image id per line
    ROOT/ImageSets/Main/<split>.txt

Detection boxes are 1-based and inclusive in the XML; `voc_box` turns them into the
0-based pixel edges every cvtrain data set uses.

`dataset.splits` maps cvtrain's train/val/test to VOC's file names (VOC has no public
test labels, so test reads val by default).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

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
    """dataset.classes when given (a subset or a custom VOC-style data set), else the 20 VOC classes.

    A name given twice would make two class indices for one object name, so it is an error.
    """
    names = [str(name) for name in cfg.classes] if cfg.classes else list(VOC_CLASSES)
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UserError(f"dataset.classes lists '{twice[0]}' more than once; give each class once.")
    return names


# --- detection annotations (Annotations/<id>.xml) ------------------------------------


def annotations_dir(root: Path) -> Path:
    """ROOT/Annotations, or a one-line error: detection needs the boxes, segmentation does not."""
    folder = root / "Annotations"
    if not folder.is_dir():
        raise UserError(f"dataset.root: '{root}' has no Annotations/ folder; VOC detection reads the boxes from "
                        "Annotations/<id>.xml, so point dataset.root at a VOC year folder that has it.")
    return folder


def voc_box(xmin: float, ymin: float, xmax: float, ymax: float) -> tuple[float, float, float, float]:
    """A VOC bndbox (1-based pixel indices, last pixel included) as 0-based xyxy pixel edges.

    VOC's top-left pixel is (1, 1) and (xmin=1, xmax=W) covers the whole image; in pixel
    edges that box is [0, W], so only the minima move: x0 = xmin - 1, x1 = xmax. This is
    detectron2's conversion (torchvision's VOCDetection returns the raw XML); subtracting
    1 from all four would shift every box by a pixel, and subtracting none would make
    one-pixel boxes empty.
    """
    return xmin - 1.0, ymin - 1.0, xmax, ymax


def _text(node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise UserError(f"{where}: an object has no <{tag}>; the annotation file is malformed.")
    return child.text.strip()


def read_annotation(path: Path, classes: list[str]) -> dict:
    """One Annotations/<id>.xml: {"height", "width" (None when <size> is absent), "boxes"
    (0-based xyxy edges), "labels" (class index + 1), "difficult"}, or a one-line error
    naming the file and what is wrong with it."""
    where = f"dataset.root: '{path}'"
    if not path.is_file():
        raise UserError(f"{where} is missing; every id of the split file needs Annotations/<id>.xml.")
    try:
        top = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise UserError(f"{where} is not valid XML ({err}); restore the file from the VOC archive.") from None
    size = top.find("size")
    height = width = None
    if size is not None and size.findtext("height") and size.findtext("width"):
        height, width = int(float(size.findtext("height"))), int(float(size.findtext("width")))
    index = {name: i for i, name in enumerate(classes)}
    boxes, labels, difficult = [], [], []
    for obj in top.iter("object"):
        name = _text(obj, "name", where)
        if name not in index:
            raise UserError(f"{where} has an object named '{name}', which is not one of the {len(classes)} classes "
                            f"({', '.join(classes[:6])}{', ...' if len(classes) > 6 else ''}); list the data set's "
                            "classes with dataset.classes=[...].")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise UserError(f"{where}: object '{name}' has no <bndbox>; the annotation file is malformed.")
        try:
            box = voc_box(*(float(_text(bndbox, k, where)) for k in ("xmin", "ymin", "xmax", "ymax")))
        except ValueError:
            raise UserError(f"{where}: object '{name}' has a non-numeric <bndbox>; the annotation file is "
                            "malformed.") from None
        if box[2] <= box[0] or box[3] <= box[1]:
            raise UserError(f"{where}: object '{name}' has an empty box (xmin > xmax or ymin > ymax); fix that object.")
        boxes.append(box)
        labels.append(index[name] + 1)
        difficult.append((obj.findtext("difficult") or "0").strip() not in ("0", ""))
    return {"height": height, "width": width, "boxes": boxes, "labels": labels, "difficult": difficult}
