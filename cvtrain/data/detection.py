"""Detection and instance-segmentation data sets: boxes (and masks) per image.

Every builder `build(cfg, split) -> DetectionDataset` returns images at their own size
(torchvision's detectors resize inside the model and map their predictions back), so
predictions come out in the annotations' coordinates and are scored against the
original COCO-format ground truth. A sample is

    {"image": uint8 (3, H, W), "boxes": float32 (k, 4) xyxy in pixels,
     "labels": int64 (k,) class index + 1 (0 is the background),
     "masks": uint8 (k, H, W) (instance segmentation only), "index": int64 scalar}

and every data set has `class_names` (no background entry), `category_ids` (the COCO
category id of each class index) and `coco_ground_truth()` (the split as a COCO
instances dict, what COCOeval scores against; image ids are the sample indices).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

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
