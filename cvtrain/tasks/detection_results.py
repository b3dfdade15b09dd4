"""A detector's outputs as COCO results, and as pictures.

torchvision detectors return, per image, xyxy boxes, labels 1..K and scores (and soft
masks (N, 1, H, W) for Mask R-CNN). COCO results want xywh boxes, the data set's
category ids and binary masks as RLE with `counts` a string, so they can go to json.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

MASK_THRESHOLD = 0.5  # a soft mask's pixels above this are the object (as torchvision and detectron2 do)
DRAW_SIZE = 256  # images are drawn upscaled to about this many pixels, so labels stay legible


def to_coco_results(outputs: Sequence[dict[str, torch.Tensor]], image_ids: Sequence[int],
                    category_ids: Sequence[int], with_masks: bool = False) -> list[dict]:
    """One COCO result per detection: {image_id, category_id, bbox [x, y, w, h], score[, segmentation]}."""
    results = []
    for out, image_id in zip(outputs, image_ids):
        boxes = out["boxes"].tolist()
        rles = encode_masks(out["masks"]) if with_masks else [None] * len(boxes)
        for (x1, y1, x2, y2), label, score, rle in zip(boxes, out["labels"].tolist(), out["scores"].tolist(), rles):
            result = {"image_id": int(image_id), "category_id": int(category_ids[label - 1]),
                      "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)}
            if rle is not None:
                result["segmentation"] = rle
            results.append(result)
    return results


def encode_masks(masks: torch.Tensor) -> list[dict]:
    """Soft masks (N, 1, H, W) -> RLEs {"size": [H, W], "counts": str}, thresholded at 0.5."""
    import numpy as np
    from pycocotools import mask as mask_utils

    binary = (masks[:, 0] > MASK_THRESHOLD).numpy().astype(np.uint8)
    rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0))) if len(binary) else []
    return [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]


def draw_detections(image: torch.Tensor, out: dict[str, torch.Tensor], class_names: Sequence[str],
                    threshold: float) -> tuple[torch.Tensor, str]:
    """The uint8 image upscaled, with boxes (and masks) scoring >= threshold and their
    class names and scores; the title counts them. An item of save_image_grid."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    keep = out["scores"] >= threshold
    scale = max(1, DRAW_SIZE // max(image.shape[-2:]))
    size = (image.shape[-2] * scale, image.shape[-1] * scale)
    canvas = torch.nn.functional.interpolate(image[None].float(), size=size, mode="nearest")[0].to(torch.uint8)
    kept_labels, kept_scores = out["labels"][keep].tolist(), out["scores"][keep].tolist()
    labels = [f"{class_names[i - 1]} {s:.2f}" for i, s in zip(kept_labels, kept_scores)]
    colors = [_colour(i) for i in kept_labels]
    if "masks" in out and keep.any():
        masks = torch.nn.functional.interpolate(out["masks"][keep].float(), size=size, mode="nearest")[:, 0]
        canvas = draw_segmentation_masks(canvas, masks > MASK_THRESHOLD, alpha=0.45, colors=colors)
    if keep.any():
        canvas = draw_bounding_boxes(canvas, out["boxes"][keep] * scale, labels=labels, colors=colors, width=2)
    return canvas, f"{len(labels)} above {threshold}"


def _colour(label: int) -> tuple[int, int, int]:
    palette = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]
    return palette[label % len(palette)]
