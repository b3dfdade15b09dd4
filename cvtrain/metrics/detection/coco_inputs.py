"""Reading and checking COCO ground truth and results before the evaluators see them.

pycocotools asserts, raises KeyError deep in `loadRes`, or (for category ids the
annotations do not define) silently ignores results; each of those is a user mistake,
so it is found here first and explained in one line. The evaluators also edit the dicts
they are given (areas, ids, masks), so both inputs are shallow-copied per annotation:
a caller's ground truth stays as it was and can be evaluated again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cvtrain.errors import UserError
from cvtrain.metrics.jsonfiles import read_json

IOU_TYPES = ("bbox", "segm")
SECTIONS = ("images", "annotations", "categories")


def load_ground_truth(gt: dict | str | Path, iou_type: str) -> dict:
    """COCO instances (a dict or a json path), checked, with annotations copied."""
    where = str(gt) if isinstance(gt, (str, Path)) else "ground truth"
    data = read_json(gt, "annotations") if isinstance(gt, (str, Path)) else gt
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in SECTIONS):
        raise UserError(
            f"{where}: not COCO instance annotations (expected an object with 'images', 'annotations' and "
            "'categories' lists); pass e.g. instances_val2017.json."
        )
    for key in ("images", "categories"):
        for i, item in enumerate(data[key]):
            if not isinstance(item, dict) or "id" not in item:
                raise UserError(f"{where}: {key}[{i}] has no 'id'; the annotations file is malformed.")
            if key == "images" and iou_type == "segm" and not ("height" in item and "width" in item):
                raise UserError(f"{where}: images[{i}] has no 'height' and 'width'; segm evaluation needs them.")
    geometry = "bbox" if iou_type == "bbox" else "segmentation"
    annotations = []
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise UserError(f"{where}: annotation #{i} is not an object; the annotations file is malformed.")
        missing = [k for k in ("id", "image_id", "category_id", "area", geometry) if k not in ann]
        if missing:
            raise UserError(
                f"{where}: annotation #{i} has no {', '.join(repr(k) for k in missing)}; "
                f"{iou_type} evaluation needs COCO instance annotations with them."
            )
        annotations.append(dict(ann))
    return {**data, "annotations": annotations}


def load_results(results: list | str | Path, gt: dict, iou_type: str) -> list[dict]:
    """Detections in the COCO results format (a list or a json path), checked against `gt`, copied."""
    where = str(results) if isinstance(results, (str, Path)) else "results"
    data = read_json(results, "results") if isinstance(results, (str, Path)) else results
    if not isinstance(data, list):
        raise UserError(
            f'{where}: expected a JSON list of {{"image_id", "category_id", "bbox" or "segmentation", "score"}} results.'
        )
    if not data:
        raise UserError(f"{where}: no detections to evaluate (the results list is empty).")
    geometry = _geometry(data[0], iou_type)
    copied = [_checked(i, r, geometry, where) for i, r in enumerate(data)]
    _check_ids(copied, "image_id", [image["id"] for image in gt["images"]], where, "list")
    _check_ids(copied, "category_id", [cat["id"] for cat in gt["categories"]], where, "define")
    return copied


def _geometry(first: Any, iou_type: str) -> str:
    """The field every result needs: masks for segm; for bbox, boxes, or masks when the
    first result has no box (loadRes then takes each box from its mask, as here)."""
    if iou_type == "bbox" and not (isinstance(first, dict) and "bbox" not in first and "segmentation" in first):
        return "bbox"
    return "segmentation"


def _checked(i: int, result: Any, geometry: str, where: str) -> dict:
    """A copy of one result, after checking its ids, score and `geometry` field."""
    if not isinstance(result, dict):
        raise UserError(f"{where}: result #{i} is not an object; write one {{image_id, category_id, ...}} per detection.")
    if not ("image_id" in result and "category_id" in result and "score" in result):
        missing = [k for k in ("image_id", "category_id", "score") if k not in result]
        raise UserError(f"{where}: result #{i} has no {', '.join(repr(k) for k in missing)}; every detection needs them.")
    score = result["score"]
    if type(score) is not float and (isinstance(score, bool) or not isinstance(score, (int, float))):
        raise UserError(f"{where}: result #{i} has score {score!r}; scores must be numbers.")
    if geometry == "segmentation":
        segmentation = result.get("segmentation")
        if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
            raise UserError(
                f"{where}: result #{i} has no 'segmentation' RLE ({{'size': [h, w], 'counts': ...}}); segm "
                "evaluation needs masks (encode them with pycocotools.mask.encode), or use --iou-type bbox."
            )
    else:
        box = result.get("bbox")
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise UserError(f"{where}: result #{i} has no 'bbox' [x, y, width, height]; bbox evaluation needs one.")
    return dict(result)


def _check_ids(results: list[dict], key: str, valid: list, where: str, verb: str) -> None:
    """Every result's `key` is one of `valid`, or an error naming the first that is not."""
    known = set(valid)
    if {_hashable(r[key]) for r in results} <= known:
        return
    unknown = [r[key] for r in results if _hashable(r[key]) not in known]
    noun = key.replace("_", " ")
    others = len({_hashable(u) for u in unknown}) - 1
    more = f" ({others} other unknown {noun}s, {len(unknown)} results in all)" if others else ""
    raise UserError(
        f"{where}: results name {noun} {unknown[0]!r}, which the annotations do not {verb}{more}; "
        f"valid ids: {id_ranges(valid)}."
    )


def _hashable(value: Any) -> Any:
    """An id as a set member; a list or dict id (never valid) becomes its repr."""
    return value if isinstance(value, (int, str, float)) else repr(value)


def id_ranges(ids: Iterable) -> str:
    """Ids as runs, '1..11, 13..25, 27', so COCO's 80 gappy category ids fit in one line."""
    values = list(dict.fromkeys(ids))
    if not all(isinstance(v, int) for v in values):
        return ", ".join(map(repr, values[:10])) + (f", ... ({len(values)} in all)" if len(values) > 10 else "")
    runs: list[list[int]] = []
    for value in sorted(values):
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    parts = [str(a) if a == b else f"{a}..{b}" for a, b in runs]
    return ", ".join(parts[:12]) + (f", ... ({len(values)} ids in {len(parts)} runs)" if len(parts) > 12 else "")


def check_image_ids(image_ids: Sequence | None, gt: dict) -> list | None:
    """The images to evaluate (all when None); ids the annotations do not list are an error."""
    if image_ids is None:
        return None
    valid = [image["id"] for image in gt["images"]]
    known = set(valid)
    unknown = [i for i in image_ids if i not in known]
    if unknown:
        raise UserError(
            f"image_ids name image id {unknown[0]!r}, which the annotations do not list; valid ids: {id_ranges(valid)}."
        )
    if not image_ids:
        raise UserError("image_ids is empty; pass None to evaluate every image.")
    return sorted(set(image_ids))
