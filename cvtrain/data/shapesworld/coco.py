"""COCO-format views of a split, for pycocotools' COCOeval and the caption scorers.

Image ids are the sample indices (0..N-1); annotation ids start at 1, because
COCOeval uses 0 as its 'unmatched' marker.
"""

from __future__ import annotations

import numpy as np

from .spec import SHAPES
from .store import ShapesWorldSplit


def _images(split: ShapesWorldSplit) -> list[dict]:
    size = split.spec.image_size
    return [
        {"id": i, "width": size, "height": size, "file_name": f"{split.split}/{i:06d}.png"}
        for i in range(len(split))
    ]


def to_coco(split: ShapesWorldSplit) -> dict:
    """COCO instances dict: bbox xywh, area = mask pixel count, RLE segmentation."""
    from pycocotools import mask as mask_utils  # only this function needs it

    annotations = []
    for i in range(len(split)):
        boxes, classes, masks = split.instances(i)
        if not len(masks):
            continue
        rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
        areas = masks.reshape(len(masks), -1).sum(axis=1)
        for box, cls, rle, area in zip(boxes.tolist(), classes.tolist(), rles, areas.tolist()):
            x0, y0, x1, y1 = box
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": i,
                "category_id": int(cls),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": int(area),
                "iscrowd": 0,
                "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            })
    return {
        "info": {"description": f"ShapesWorld {split.split}", "version": "1"},
        "images": _images(split),
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(SHAPES)],
    }


def to_coco_captions(split: ShapesWorldSplit) -> dict:
    """COCO captions dict: five annotations {image_id, id, caption} per image."""
    annotations = [
        {"image_id": i, "id": i * len(caps) + j + 1, "caption": caption}
        for i, caps in enumerate(split.captions)
        for j, caption in enumerate(caps)
    ]
    return {"info": {"description": f"ShapesWorld {split.split} captions"}, "images": _images(split),
            "annotations": annotations}
