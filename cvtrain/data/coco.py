"""COCO instances on disk: one json and its image folder, read once and indexed.

Detection, instance segmentation and semantic segmentation all read the same format, so
they share this reader: boxes (xyxy), class indices (categories sorted by id, index 0 is
the smallest id, as torchvision and detectron2 map them), crowd flags, instance masks
from polygons or RLE (pycocotools), and the semantic mask painted from the instances.
Nothing here resizes: the tasks decide the resolution.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cvtrain.data.image_files import first_missing, verify_images
from cvtrain.errors import UserError
from cvtrain.metrics.detection.categories import validate_categories
from cvtrain.metrics.jsonfiles import read_json

IGNORE = 255  # semantic label of crowd regions: scored by nothing


def split_paths(cfg: Any, split: str) -> tuple[Path, Path]:
    """(annotations json, image folder) of `split`, from the dataset config's templates.

    `dataset.annotations` and `dataset.image_dir` may hold "{root}" and "{split}";
    `{split}` becomes `dataset.splits[split]` (e.g. val -> val2017). Each missing path is
    named with the key that sets it, since a wrong root, split name or template all show
    up as the same missing file.
    """
    if not cfg.root and ("{root}" in str(cfg.annotations or "") or "{root}" in str(cfg.image_dir or "")):
        raise UserError("dataset.root is required but not set; pass dataset.root=FOLDER of the COCO data set.")
    if cfg.root and not Path(os.path.expanduser(str(cfg.root))).is_dir():
        raise UserError(f"dataset.root: no such folder '{cfg.root}'; point dataset.root at the COCO data set's folder.")
    names = dict(cfg.splits)
    if split not in names:
        raise UserError(f"dataset.splits has no '{split}' entry; give one, e.g. dataset.splits.{split}=val2017.")
    fill = {"root": os.path.expanduser(str(cfg.root or "")), "split": names[split]}
    annotations = Path(str(cfg.annotations or "").format(**fill)).expanduser()
    image_dir = Path(str(cfg.image_dir or "").format(**fill)).expanduser()
    which = f"split {split} (dataset.splits.{split}={names[split]})"
    if not cfg.annotations or not annotations.is_file():
        raise UserError(f"dataset.annotations: no such file '{annotations}' for {which}; pass "
                        "dataset.annotations=PATH of a COCO instances json ({root} and {split} are filled in).")
    if not cfg.image_dir or not image_dir.is_dir():
        raise UserError(f"dataset.image_dir: no such folder '{image_dir}' for {which}; pass "
                        "dataset.image_dir=FOLDER of that json's images ({root} and {split} are filled in).")
    return annotations, image_dir


class CocoInstances:
    """The images and instance annotations of one COCO json, checked on load."""

    def __init__(self, annotations: str | Path, image_dir: str | Path, classes: Sequence[str] | None = None,
                 verify: bool = False):
        self.annotations_path, self.image_dir = Path(annotations), Path(image_dir)
        where = f"dataset.annotations: '{self.annotations_path}'"
        data = read_json(self.annotations_path, "annotations")
        if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
            raise UserError(f"{where} is not COCO instances (needs 'images', 'annotations' and 'categories' lists).")
        self.data = data
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.class_names = [str(c["name"]) for c in categories]
        if classes is not None:
            validate_categories(categories, list(classes))
        self.category_ids = [c["id"] for c in categories]
        index_of = {cid: i for i, cid in enumerate(self.category_ids)}
        self.images = sorted(data["images"], key=lambda im: im["id"])
        known = {im["id"] for im in self.images}
        if len(known) != len(self.images):
            raise UserError(f"{where} lists some image id more than once; each image needs its own id.")
        self._by_image: dict[Any, list[dict]] = {im["id"]: [] for im in self.images}
        for k, ann in enumerate(data["annotations"]):
            if ann.get("image_id") not in known:
                raise UserError(f"{where}: annotation #{k} refers to image id {ann.get('image_id')!r}, "
                                "which 'images' does not list; the file is inconsistent.")
            if ann.get("category_id") not in index_of:
                raise UserError(f"{where}: annotation #{k} has category id {ann.get('category_id')!r}, which "
                                f"'categories' does not define (ids: {self.category_ids[:10]}); the file is inconsistent.")
            self._by_image[ann["image_id"]].append(ann)
        self._index_of = index_of
        missing = first_missing(self.path(i) for i in range(len(self.images)))  # a wrong folder shows at once
        if missing:
            raise UserError(f"dataset.image_dir: image '{missing}' named in "
                            f"{self.annotations_path.name} is missing; point it at that json's image folder.")
        if verify:  # dataset.verify: decode every image now, not one failure an epoch later
            verify_images(self.path(i) for i in range(len(self.images)))

    def __len__(self) -> int:
        return len(self.images)

    def path(self, i: int) -> Path:
        return self.image_dir / self.images[i]["file_name"]

    def image_id(self, i: int):
        return self.images[i]["id"]

    def size(self, i: int) -> tuple[int, int]:
        """(height, width) as the json states it."""
        return int(self.images[i]["height"]), int(self.images[i]["width"])

    def annotations(self, i: int) -> list[dict]:
        return self._by_image[self.image_id(i)]

    def instances(self, i: int, with_masks: bool = False, keep_crowd: bool = False) -> dict[str, np.ndarray]:
        """Boxes (k, 4) xyxy float32, labels (k,) int64 class index + 1 (0 is background),
        iscrowd (k,) bool, and masks (k, H, W) uint8 when asked. Boxes are clipped to the
        image (as torchvision's reference clips them), then those under a pixel wide or
        high are dropped: torchvision's detectors refuse empty boxes and a sub-pixel one
        teaches nothing. Crowds are dropped unless asked. Masks are decoded here, per
        image, never for the whole split at once."""
        height, width = self.size(i)
        anns, boxes = [], []
        for ann in self.annotations(i):
            if (ann.get("iscrowd", 0) and not keep_crowd) or len(ann.get("bbox") or ()) != 4:
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            box = [min(max(x, 0.0), width), min(max(y, 0.0), height), min(max(x + w, 0.0), width),
                   min(max(y + h, 0.0), height)]
            if box[2] - box[0] >= 1 and box[3] - box[1] >= 1:
                anns.append(ann)
                boxes.append(box)
        out = {
            "boxes": np.array(boxes, np.float32).reshape(-1, 4),
            "labels": np.array([self._index_of[a["category_id"]] + 1 for a in anns], np.int64),
            "iscrowd": np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
        }
        if with_masks:
            masks = [self._mask(i, a) for a in anns]
            out["masks"] = np.stack(masks) if masks else np.zeros((0, height, width), np.uint8)
        return out

    def _mask(self, i: int, ann: dict) -> np.ndarray:
        """One annotation's mask at the image's size; an RLE of another size is the file's mistake, named."""
        height, width = self.size(i)
        segm = ann.get("segmentation")
        if isinstance(segm, dict) and list(segm.get("size") or ()) != [height, width]:
            raise UserError(f"dataset.annotations: '{self.annotations_path}': annotation {ann.get('id')!r} has an "
                            f"RLE of size {segm.get('size')} but its image is {height}x{width}; the file is "
                            "inconsistent.")
        return annotation_mask(ann, height, width)

    def semantic(self, i: int) -> np.ndarray:
        """uint8 (H, W): 0 background, class index + 1 per instance (later annotations on top),
        IGNORE under crowd regions."""
        height, width = self.size(i)
        out = np.zeros((height, width), np.uint8)
        crowd = np.zeros((height, width), bool)
        for ann in self.annotations(i):
            mask = self._mask(i, ann).astype(bool)
            if ann.get("iscrowd", 0):
                crowd |= mask
            else:
                out[mask] = self._index_of[ann["category_id"]] + 1
        out[crowd] = IGNORE
        return out


def annotation_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """uint8 (H, W) mask of one annotation: polygons, RLE or uncompressed RLE (pycocotools).

    Polygons of fewer than three points are skipped, as detectron2 skips them: pycocotools
    would read a four-number polygon as a box and fail on shorter ones, and real COCO
    files hold a few such degenerate parts.
    """
    from pycocotools import mask as mask_utils

    segm = ann.get("segmentation")
    if not segm:  # no mask given: the box is the best mask there is
        x, y, w, h = ann["bbox"]
        out = np.zeros((height, width), np.uint8)
        out[max(int(y), 0) : int(np.ceil(y + h)), max(int(x), 0) : int(np.ceil(x + w))] = 1
        return out
    if isinstance(segm, list):
        polygons = [p for p in segm if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segm.get("counts"), list):
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        rle = segm
    return mask_utils.decode(rle).astype(np.uint8)
