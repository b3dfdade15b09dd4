"""Detection and instance-segmentation data sets: boxes (and masks) per image.

Every builder `build(cfg, split) -> DetectionDataset` returns images at their own size
(torchvision's detectors resize inside the model and map their predictions back), so
predictions come out in the annotations' coordinates and are scored against the
original COCO-format ground truth. A sample is

    {"image": uint8 (3, H, W), "boxes": float32 (k, 4) xyxy in pixels,
     "labels": int64 (k,) class index + 1 (0 is the background),
     "masks": uint8 (k, H, W) (instance segmentation only), "index": int64 scalar}

and every data set has `class_names` (no background entry), `category_ids` (the COCO
category id of each class index), `with_masks` (whether samples carry "masks") and
`coco_ground_truth()` (the split as a COCO
instances dict, what COCOeval scores against; image ids are the sample indices).

Builders: `shapes` (ShapesWorld, in memory), `coco` (a COCO instances json and its image
folder, see cvtrain/data/coco.py) for detection and instance segmentation, and `voc`
(Pascal VOC's Annotations/*.xml) for detection. Real images are decoded per sample, in
the DataLoader's workers, and masks per sample too: nothing of the split's pixels is
held in memory. Objects the reference protocols ignore (COCO crowds, VOC `difficult`
objects) are no training targets, but they stay in `coco_ground_truth()` with
iscrowd=1, so that COCOeval neither counts them as misses nor a detection on them as a
false positive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cvtrain.data.coco import CocoInstances, split_paths
from cvtrain.data.image_files import first_missing, open_rgb, verify_images, wants_verify
from cvtrain.data.voc import (
    annotations_dir,
    class_names,
    read_annotation,
    split_ids,
    voc_root,
)
from cvtrain.errors import UserError
from cvtrain.registry import DATASETS


class DetectionDataset(Dataset):
    """The interface the detection tasks rely on; subclasses read one format."""

    class_names: list[str]
    category_ids: list[int]
    with_masks: bool = False

    def coco_ground_truth(self) -> dict:
        raise NotImplementedError


def collate_detection(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch as torchvision's detectors take it: a list of images and a list of targets."""
    keys = [k for k in ("boxes", "labels", "masks") if k in samples[0]]
    return {
        "images": [s["image"] for s in samples],
        "targets": [{k: s[k] for k in keys} for s in samples],
        "index": torch.stack([torch.as_tensor(s["index"]) for s in samples]),
    }


class ShapesDetection(DetectionDataset):
    """ShapesWorld scenes with their instance boxes (and masks); categories 1..6 are the shapes."""

    def __init__(self, cfg, split: str, with_masks: bool):
        from cvtrain.data.shapes import load
        from cvtrain.data.shapesworld import SHAPES

        self.split_data = load(cfg, split)
        self.with_masks = with_masks
        self.class_names = list(SHAPES)
        self.category_ids = list(range(1, len(SHAPES) + 1))
        self.images = torch.from_numpy(self.split_data.images).permute(0, 3, 1, 2).contiguous()
        offsets = self.split_data.instance_offsets
        self._boxes = torch.from_numpy(np.ascontiguousarray(self.split_data.boxes, dtype=np.float32))
        self._labels = torch.from_numpy(self.split_data.classes.astype(np.int64))
        self._offsets = offsets.tolist()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        lo, hi = self._offsets[i], self._offsets[i + 1]
        sample = {"image": self.images[i], "boxes": self._boxes[lo:hi], "labels": self._labels[lo:hi],
                  "index": torch.tensor(i)}
        if self.with_masks:
            sample["masks"] = torch.from_numpy(self.split_data.instances(i)[2].astype(np.uint8))
        return sample

    def coco_ground_truth(self) -> dict:
        from cvtrain.data.shapesworld import to_coco

        return to_coco(self.split_data)


@DATASETS.register("shapes", family="detection")
def shapes_detection(cfg, split: str) -> ShapesDetection:
    return ShapesDetection(cfg, split, with_masks=False)


@DATASETS.register("shapes", family="instance_segmentation")
def shapes_instances(cfg, split: str) -> ShapesDetection:
    return ShapesDetection(cfg, split, with_masks=True)


# --- images on disk --------------------------------------------------------------------


def read_rgb(path: Path) -> torch.Tensor:
    """uint8 (3, H, W) RGB pixels of an image file, as stored (see open_rgb)."""
    return torch.from_numpy(np.array(open_rgb(path))).permute(2, 0, 1).contiguous()


def _check_size(image: torch.Tensor, height: int, width: int, path: Path, source: str) -> None:
    """Boxes and masks are in the annotations' coordinates: an image of another size would
    silently misplace them, so it is an error naming both sizes."""
    if tuple(image.shape[1:]) != (height, width):
        raise UserError(f"dataset: image '{path}' is {image.shape[2]}x{image.shape[1]} (WxH) but {source} says "
                        f"{width}x{height}; the annotations and the images do not match.")


def _sample(image: torch.Tensor, boxes: np.ndarray, labels: np.ndarray, index: int) -> dict[str, Any]:
    return {"image": image, "boxes": torch.from_numpy(np.ascontiguousarray(boxes, np.float32)),
            "labels": torch.from_numpy(np.ascontiguousarray(labels, np.int64)), "index": torch.tensor(index)}


# --- COCO ----------------------------------------------------------------------------


def _box_polygon(bbox: list) -> list[list[float]]:
    x, y, w, h = (float(v) for v in bbox)
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _ground_truth_segmentation(ann: dict) -> Any:
    """The annotation's segmentation as COCOeval can read it: degenerate polygon parts
    (under three points) dropped, as the training masks drop them, and the box when
    nothing is left, as annotation_mask falls back to it."""
    segm = ann.get("segmentation")
    if isinstance(segm, list):
        segm = [p for p in segm if len(p) >= 6]
    return segm if segm else _box_polygon(ann["bbox"])


class CocoDetection(DetectionDataset):
    """A COCO instances json and its images; class index i is the i-th smallest category id."""

    def __init__(self, coco: CocoInstances, with_masks: bool):
        self.coco = coco
        self.with_masks = with_masks
        self.class_names = list(coco.class_names)
        self.category_ids = list(coco.category_ids)

    def __len__(self) -> int:
        return len(self.coco)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = read_rgb(self.coco.path(i))
        _check_size(image, *self.coco.size(i), self.coco.path(i), f"'{self.coco.annotations_path}'")
        found = self.coco.instances(i, with_masks=self.with_masks)
        sample = _sample(image, found["boxes"], found["labels"], i)
        if self.with_masks:
            sample["masks"] = torch.from_numpy(found["masks"])
        return sample

    def coco_ground_truth(self) -> dict:
        """Every annotation, crowds included (iscrowd=1), on image ids 0..N-1 in sample order;
        boxes, areas and segmentations as the json has them (original coordinates)."""
        images, annotations = [], []
        for i in range(len(self.coco)):
            height, width = self.coco.size(i)
            images.append({"id": i, "height": height, "width": width, "file_name": self.coco.images[i]["file_name"]})
            for ann in self.coco.annotations(i):
                if len(ann.get("bbox") or ()) != 4:
                    continue  # nothing to score against
                bbox = [float(v) for v in ann["bbox"]]
                annotations.append({
                    "id": len(annotations) + 1,  # COCOeval reads id 0 as 'unmatched'
                    "image_id": i,
                    "category_id": ann["category_id"],
                    "bbox": bbox,
                    "area": float(ann.get("area", bbox[2] * bbox[3])),
                    "iscrowd": int(bool(ann.get("iscrowd", 0))),
                    "segmentation": _ground_truth_segmentation(ann),
                })
        categories = sorted(self.coco.data["categories"], key=lambda c: c["id"])
        return {"info": {"description": f"{self.coco.annotations_path.name} as cvtrain samples"},
                "images": images, "annotations": annotations,
                "categories": [{"id": c["id"], "name": str(c["name"]), "supercategory": c.get("supercategory", "")}
                               for c in categories]}


def _coco(cfg, split: str) -> CocoInstances:
    annotations, image_dir = split_paths(cfg, split)
    return CocoInstances(annotations, image_dir, classes=cfg.classes, verify=wants_verify(cfg))


@DATASETS.register("coco", family="detection")
def coco_detection(cfg, split: str) -> CocoDetection:
    """COCO boxes; `dataset.classes`, when given, must match the json's categories."""
    return CocoDetection(_coco(cfg, split), with_masks=False)


@DATASETS.register("coco", family="instance_segmentation")
def coco_instances(cfg, split: str) -> CocoDetection:
    """COCO boxes and masks (polygons or RLE, decoded per sample)."""
    return CocoDetection(_coco(cfg, split), with_masks=True)


# --- Pascal VOC ----------------------------------------------------------------------


class VocDetection(DetectionDataset):
    """Pascal VOC boxes from Annotations/<id>.xml; category id = class index + 1.

    Every XML is parsed here, once (tens of kilobytes each, a second or two for all of
    VOC 2012): an object name outside the class list must fail before training starts,
    and coco_ground_truth() needs every box anyway. Images are read per sample.
    """

    def __init__(self, root: Path, ids: list[str], classes: list[str], verify: bool = False):
        folder = annotations_dir(root)
        self.ids = ids
        self.class_names = list(classes)
        self.category_ids = list(range(1, len(classes) + 1))
        self.paths = [root / "JPEGImages" / f"{image_id}.jpg" for image_id in ids]
        missing = first_missing(self.paths)  # a wrong folder shows at once, not after an epoch
        if missing:
            raise UserError(f"dataset.root: image '{missing}' listed in the split file is missing; point "
                            "dataset.root at a complete VOC year folder.")
        if verify:
            verify_images(self.paths)
        self.records = []
        for image_id in ids:
            record = read_annotation(folder / f"{image_id}.xml", self.class_names)
            record["boxes"] = np.array(record["boxes"], np.float32).reshape(-1, 4)
            record["labels"] = np.array(record["labels"], np.int64)
            record["difficult"] = np.array(record["difficult"], bool)
            self.records.append(record)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        record = self.records[i]
        image = read_rgb(self.paths[i])
        if record["height"] is not None:
            _check_size(image, record["height"], record["width"], self.paths[i], f"Annotations/{self.ids[i]}.xml")
        keep = ~record["difficult"]  # VOC's protocol ignores difficult objects: no target
        return _sample(image, record["boxes"][keep], record["labels"][keep], i)

    def _size(self, i: int) -> tuple[int, int]:
        """(height, width) from the XML, else from the image's header (no decoding)."""
        record = self.records[i]
        if record["height"] is None:
            from PIL import Image

            with Image.open(self.paths[i]) as image:
                record["width"], record["height"] = image.size
        return record["height"], record["width"]

    def coco_ground_truth(self) -> dict:
        """Every box, difficult ones with iscrowd=1 (COCOeval then ignores them, as VOC's
        protocol does), on image ids 0..N-1; area = box area (VOC has no masks)."""
        images, annotations = [], []
        for i, record in enumerate(self.records):
            height, width = self._size(i)
            images.append({"id": i, "height": height, "width": width, "file_name": self.paths[i].name})
            for (x0, y0, x1, y1), label, difficult in zip(record["boxes"].tolist(), record["labels"].tolist(),
                                                          record["difficult"].tolist()):
                annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label),
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                    "iscrowd": int(difficult)})
        categories = [{"id": cid, "name": name, "supercategory": ""}
                      for cid, name in zip(self.category_ids, self.class_names)]
        return {"info": {"description": "Pascal VOC as cvtrain samples"}, "images": images,
                "annotations": annotations, "categories": categories}


@DATASETS.register("voc", family="detection")
def voc_detection(cfg, split: str) -> VocDetection:
    """VOC boxes of ImageSets/Main/<split>.txt; classes: dataset.classes, else the 20 VOC classes."""
    root = voc_root(cfg)
    return VocDetection(root, split_ids(root, "detection", cfg, split), class_names(cfg), verify=wants_verify(cfg))
