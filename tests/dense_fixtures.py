"""Tiny COCO and Pascal VOC data sets on disk, written from ShapesWorld scenes.

Plain functions, not pytest fixtures, so any test (detection, instance or semantic
segmentation) can write one into its `tmp_path` and check a reader against what the
writer says it wrote:

    fx = write_coco_fixture(tmp_path)           # or write_voc_fixture(tmp_path)
    cfg = compose_cfg(["task=classification", *fx.overrides]).dataset
    fx.images["val"][0].boxes, .labels, .masks, .semantic, ...

Both are built to catch the usual reader bugs, not to look real:

- images are not square and not all one size (each ShapesWorld scene is padded on the
  right and bottom), so a swapped height/width or a fixed-size collate fails;
- COCO category ids are not contiguous (1, 3, 7, 8, 12, 20) and the json lists
  categories and images out of order, so the id <-> class index mapping is exercised;
- COCO image ids are 1000 + 7 * i, not the sample indices, so `coco_ground_truth()`
  must remap them;
- COCO segmentations mix polygons (rectangles of the object's box, so the expected
  pixels are known without pycocotools; one annotation per split is two rectangles with
  a one-column gap, so a reader that keeps only the first polygon is caught) and
  compressed RLE (the object's visible ShapesWorld mask); one annotation per split is a
  crowd (iscrowd=1, uncompressed RLE, as COCO stores crowds); the last image of each
  split is blank and has no annotations;
- VOC boxes are written in VOC's 1-based, inclusive pixel coordinates; one object per
  split is `difficult`; SegmentationClass PNGs are palette ("P") images with the class
  index per pixel and 255 on object borders.

VOC class names: by default the six shapes are renamed to six of the 20 VOC classes
(SHAPE_VOC_NAMES: circle -> aeroplane, square -> bird, ...), spread over the list so
that the class index is not the shape index, and the data set reads with the default
class list (no dataset.classes). Pass `classes=list(SHAPES)` (and
`shape_names=SHAPES`) to write the shapes' own names instead; `overrides` then sets
dataset.classes.

Expected values use the dataset contract of cvtrain/data/detection.py: boxes float32
(k, 4) xyxy pixel edges, labels int64 class index + 1, masks uint8 (k, H, W).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
from PIL import Image

from cvtrain.data.shapesworld import SHAPES, ShapesWorldSpec, load_split
from cvtrain.data.voc import VOC_CLASSES

# COCO category id of each shape (class index order); gaps on purpose.
COCO_CATEGORY_IDS: tuple[int, ...] = (1, 3, 7, 8, 12, 20)
# The VOC class each shape is written as (index order of SHAPES); indices 0, 2, 6, 7, 11, 14.
SHAPE_VOC_NAMES: tuple[str, ...] = ("aeroplane", "bird", "car", "cat", "dog", "person")
BLANK = (20, 20, 24)  # pixels of padding and of the blank image
IGNORE = 255


@dataclass
class FixtureImage:
    """What one written image holds, in sample order (sample index = position in the list).

    `boxes`, `labels`, `masks` are the training targets; `ignored_*` are the annotations
    that must not be trained on but stay in the COCO ground truth with iscrowd=1 (COCO
    crowds, VOC difficult objects). `kinds` names each target's segmentation format
    ("polygon", "polygons" (two parts), "rle"; VOC: "box"). `image` is the file's pixels
    as decoded by PIL (exact even for JPEG). `semantic` is the per-pixel class index + 1
    (0 background, 255 ignored: crowd regions for COCO, as CocoInstances.semantic paints
    them; object borders for VOC, as the PNG holds them).
    """

    file_name: str
    image_id: int | str  # the id in the json (COCO) or the VOC image id
    height: int
    width: int
    image: np.ndarray  # uint8 (H, W, 3)
    boxes: np.ndarray  # float32 (k, 4)
    labels: np.ndarray  # int64 (k,)
    masks: np.ndarray  # uint8 (k, H, W); VOC: the boxes filled
    kinds: list[str]
    ignored_boxes: np.ndarray  # float32 (c, 4)
    ignored_labels: np.ndarray  # int64 (c,)
    ignored_masks: np.ndarray  # uint8 (c, H, W)
    semantic: np.ndarray  # uint8 (H, W)


@dataclass
class Fixture:
    """A written data set: where it is, how to point a config at it, what it holds."""

    root: Path
    overrides: list[str]  # for compose_cfg: dataset=..., dataset.root=..., splits, classes
    class_names: list[str]  # the data set's classes (no background), index order
    category_ids: list[int]  # COCO category id of each class index
    splits: dict[str, str]  # cvtrain split -> folder / file name (train -> train2017)
    images: dict[str, list[FixtureImage]] = field(default_factory=dict)  # by cvtrain split


# --- shared pieces -------------------------------------------------------------------


def _scenes(name: str, n: int, image_size: int, seed: int):
    """n ShapesWorld scenes with at least two objects each (room for a crowd or a difficult one)."""
    return load_split(name, n, ShapesWorldSpec(image_size=image_size, min_objects=2, max_objects=4, seed=seed))


def _padded_size(i: int, size: int) -> tuple[int, int]:
    """(H, W) of image i: never square, three widths and two heights in turn."""
    return size + 4 * (i % 2), size + 8 * (1 + i % 3)


def _pad(array: np.ndarray, height: int, width: int, value=0) -> np.ndarray:
    """`array` (h, w, ...) in the top-left corner of a (height, width, ...) canvas: coordinates unchanged."""
    out = np.empty((height, width, *array.shape[2:]), array.dtype)
    out[...] = value
    out[: array.shape[0], : array.shape[1]] = array
    return out


def _box_mask(box: Sequence[float], height: int, width: int, gap_column: int | None = None) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)
    out = np.zeros((height, width), np.uint8)
    out[y0:y1, x0:x1] = 1
    if gap_column is not None:
        out[:, gap_column] = 0
    return out


def _stack(masks: list[np.ndarray], height: int, width: int) -> np.ndarray:
    return np.stack(masks).astype(np.uint8) if masks else np.zeros((0, height, width), np.uint8)


def _boxes(boxes: list) -> np.ndarray:
    return np.array(boxes, np.float32).reshape(-1, 4)


def _split_names(splits: Mapping[str, str] | Sequence[str], defaults: tuple[str, ...]) -> dict[str, str]:
    """{cvtrain split: on-disk name}; a plain list pairs names with train, val, test in turn."""
    if isinstance(splits, Mapping):
        return dict(splits)
    return dict(zip(("train", "val", "test"), splits or defaults))


def _split_overrides(splits: dict[str, str]) -> list[str]:
    """dataset.splits entries for every written split; test reads val when not written."""
    names = dict(splits)
    names.setdefault("test", names.get("val", next(iter(names.values()))))
    return [f"dataset.splits.{k}={v}" for k, v in names.items()]


# --- COCO ----------------------------------------------------------------------------


def _rectangle(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    """A polygon whose pycocotools rasterization is exactly the pixels [y0:y1, x0:x1] (integer edges)."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (column-major run lengths, starting with a run of zeros), as crowds are stored."""
    flat = np.asfortranarray(mask).ravel(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def _compressed_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _coco_annotation(kind: str, box: np.ndarray, mask: np.ndarray) -> tuple[dict, np.ndarray]:
    """(annotation without ids, the mask it decodes to) for one object written as `kind`."""
    height, width = mask.shape
    x0, y0, x1, y1 = (float(v) for v in box)
    if kind == "polygon":
        segmentation, decoded = [_rectangle(x0, y0, x1, y1)], _box_mask(box, height, width)
    elif kind == "polygons":  # two rectangles with a one-column gap: both parts must be painted
        gap = int(x0 + x1) // 2
        segmentation = [_rectangle(x0, y0, gap, y1), _rectangle(gap + 1, y0, x1, y1)]
        decoded = _box_mask(box, height, width, gap_column=gap)
    elif kind == "rle":
        segmentation, decoded = _compressed_rle(mask), mask.astype(np.uint8)
    else:  # "crowd": uncompressed RLE, iscrowd=1
        segmentation, decoded = _uncompressed_rle(mask), mask.astype(np.uint8)
    ann = {"bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(decoded.sum()), "segmentation": segmentation,
           "iscrowd": int(kind == "crowd")}
    return ann, decoded


def _coco_kinds(i: int, k: int, crowd_at: int | None) -> list[str]:
    """Segmentation format per object of image i: polygons and RLE alternate; one crowd, one two-part polygon."""
    kinds = ["polygon" if (i + j) % 2 == 0 else "rle" for j in range(k)]
    if i == 0:
        kinds[0] = "polygons"
    if crowd_at is not None:
        kinds[crowd_at] = "crowd"
    return kinds


def _write_coco_split(
    root: Path, name: str, n: int, image_size: int, seed: int, image_format: str
) -> list[FixtureImage]:
    """Images under root/<name>/ and root/annotations/instances_<name>.json; the expected values."""
    scenes = _scenes(name, n, image_size, seed)
    (root / name).mkdir(parents=True, exist_ok=True)
    images, annotations, expected = [], [], []
    for i in range(n):
        height, width = _padded_size(i, image_size)
        image_id = 1000 + 7 * i
        file_name = f"{image_id:012d}.{image_format}"
        blank = i == n - 1  # an image without annotations is kept, never dropped
        boxes, classes, masks = scenes.instances(i)
        if blank:
            boxes, classes, masks = boxes[:0], classes[:0], masks[:0]
            pixels = _pad(np.zeros((0, 0, 3), np.uint8), height, width, BLANK)
        else:
            pixels = _pad(scenes.images[i], height, width, BLANK)
        Image.fromarray(pixels).save(root / name / file_name, quality=95)
        pixels = np.asarray(Image.open(root / name / file_name).convert("RGB"))
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        crowd_at = len(classes) - 1 if i == 1 else None
        item = {"boxes": [], "labels": [], "masks": [], "kinds": [], "ignored_boxes": [], "ignored_labels": [],
                "ignored_masks": []}
        semantic, crowd = np.zeros((height, width), np.uint8), np.zeros((height, width), bool)
        for box, cls, mask, kind in zip(boxes, classes, masks, _coco_kinds(i, len(classes), crowd_at)):
            ann, decoded = _coco_annotation(kind, box, _pad(mask, height, width, False))
            annotations.append({"id": 5 * len(annotations) + 3, "image_id": image_id,
                                "category_id": COCO_CATEGORY_IDS[int(cls) - 1], **ann})
            prefix = "ignored_" if kind == "crowd" else ""
            item[f"{prefix}boxes"].append(box)
            item[f"{prefix}labels"].append(int(cls))
            item[f"{prefix}masks"].append(decoded)
            if kind == "crowd":
                crowd |= decoded.astype(bool)
            else:
                item["kinds"].append(kind)
                semantic[decoded.astype(bool)] = int(cls)
        semantic[crowd] = IGNORE
        expected.append(FixtureImage(
            file_name=file_name, image_id=image_id, height=height, width=width, image=pixels,
            boxes=_boxes(item["boxes"]), labels=np.array(item["labels"], np.int64),
            masks=_stack(item["masks"], height, width), kinds=item["kinds"],
            ignored_boxes=_boxes(item["ignored_boxes"]), ignored_labels=np.array(item["ignored_labels"], np.int64),
            ignored_masks=_stack(item["ignored_masks"], height, width), semantic=semantic,
        ))
    categories = [{"id": cid, "name": shape, "supercategory": "shape"} for cid, shape in zip(COCO_CATEGORY_IDS, SHAPES)]
    data = {"info": {"description": f"cvtrain test fixture {name}"}, "licenses": [],  # listed out of order on purpose
            "images": images[::-1], "annotations": annotations, "categories": categories[::-1]}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{name}.json").write_text(json.dumps(data))
    return expected


def write_coco_fixture(
    root: str | Path,
    n: int = 8,
    splits: Mapping[str, str] | Sequence[str] = ("train2017", "val2017"),
    image_size: int = 48,
    seed: int = 0,
    image_format: str = "png",
) -> Fixture:
    """A COCO 2017-like folder: root/annotations/instances_<name>.json and root/<name>/*.<image_format>.

    `splits` maps cvtrain splits to folder names ({"train": "train2017", "val": "val2017"});
    a list is paired with train, val, test in order. `n` (>= 3) images per split; the
    layout matches conf/dataset/coco.yaml, so `overrides` is dataset=coco, dataset.root
    and dataset.splits. Categories are the six shapes with ids COCO_CATEGORY_IDS; class
    index + 1 = shape index + 1. `image_format="jpg"` writes JPEGs (expected `image`s are
    what PIL decodes, so they stay exact).
    """
    if n < 3:
        raise ValueError("write_coco_fixture needs n >= 3: image 0 has the two-part polygon, 1 the crowd, n-1 is blank")
    root = Path(root)
    names = _split_names(splits, ("train2017", "val2017"))
    fixture = Fixture(root, ["dataset=coco", f"dataset.root={root}", *_split_overrides(names)], list(SHAPES),
                      list(COCO_CATEGORY_IDS), names)
    for split, name in names.items():
        fixture.images[split] = _write_coco_split(root, name, n, image_size, seed, image_format)
    return fixture


# --- Pascal VOC ----------------------------------------------------------------------


def _voc_xml(image_id: str, height: int, width: int, objects: list[tuple[str, np.ndarray, bool]]) -> bytes:
    """A VOC annotation: size, and per object name, difficult and bndbox in 1-based inclusive pixels.

    A box with 0-based pixel edges [x0, y0, x1, y1] covers pixels x0..x1-1, written
    xmin = x0 + 1, xmax = x1 (VOC counts pixels from 1 and includes the last one).
    """
    top = ET.Element("annotation")
    ET.SubElement(top, "folder").text = "VOC2012"
    ET.SubElement(top, "filename").text = f"{image_id}.jpg"
    size = ET.SubElement(top, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(top, "segmented").text = "1"
    for name, box, difficult in objects:
        obj = ET.SubElement(top, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(int(difficult))
        bndbox = ET.SubElement(obj, "bndbox")
        x0, y0, x1, y1 = (int(v) for v in box)
        for key, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(bndbox, key).text = str(value)
    return ET.tostring(top)


def voc_palette() -> list[int]:
    """VOC's colour map (bit-interleaved class index), 256 RGB entries flattened; 255 is (224, 224, 192)."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def _write_voc_split(root: Path, name: str, n: int, image_size: int, seed: int, label_of: list[int],
                     class_names: list[str]) -> list[FixtureImage]:
    """One split's JPEGs, XMLs, PNGs and ImageSets lists; the expected values."""
    scenes = _scenes(name, n, image_size, seed)
    expected, ids = [], []
    for i in range(n):
        height, width = _padded_size(i, image_size)
        image_id = f"2008_{name}_{i:04d}"
        ids.append(image_id)
        boxes, classes, masks = scenes.instances(i)
        labels = [label_of[int(c) - 1] for c in classes]
        difficult = [i == 0 and j == 1 for j in range(len(labels))]  # one difficult object per split
        path = root / "JPEGImages" / f"{image_id}.jpg"
        Image.fromarray(_pad(scenes.images[i], height, width, BLANK)).save(path, quality=95)
        objects = [(class_names[lab - 1], box, d) for lab, box, d in zip(labels, boxes, difficult)]
        (root / "Annotations" / f"{image_id}.xml").write_bytes(_voc_xml(image_id, height, width, objects))
        semantic = np.zeros(scenes.semantic[i].shape, np.uint8)
        for shape_index, label in enumerate(label_of):
            semantic[scenes.semantic[i] == shape_index + 1] = label
        semantic[scenes.edges[i] > 0] = IGNORE
        semantic = _pad(semantic, height, width, 0)
        png = Image.frombytes("P", (width, height), np.ascontiguousarray(semantic).tobytes())
        png.putpalette(voc_palette())
        png.save(root / "SegmentationClass" / f"{image_id}.png")
        keep = [j for j, d in enumerate(difficult) if not d]
        drop = [j for j, d in enumerate(difficult) if d]
        expected.append(FixtureImage(
            file_name=f"{image_id}.jpg", image_id=image_id, height=height, width=width,
            image=np.asarray(Image.open(path).convert("RGB")),
            boxes=_boxes([boxes[j] for j in keep]), labels=np.array([labels[j] for j in keep], np.int64),
            masks=_stack([_box_mask(boxes[j], height, width) for j in keep], height, width), kinds=["box"] * len(keep),
            ignored_boxes=_boxes([boxes[j] for j in drop]),
            ignored_labels=np.array([labels[j] for j in drop], np.int64),
            ignored_masks=_stack([_box_mask(boxes[j], height, width) for j in drop], height, width), semantic=semantic,
        ))
    for kind in ("Main", "Segmentation"):
        (root / "ImageSets" / kind / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return expected


def write_voc_fixture(
    root: str | Path,
    n: int = 8,
    splits: Mapping[str, str] | Sequence[str] = ("train", "val"),
    image_size: int = 48,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    shape_names: Sequence[str] = SHAPE_VOC_NAMES,
) -> Fixture:
    """A VOC year folder: JPEGImages/, Annotations/, SegmentationClass/, ImageSets/{Main,Segmentation}/<name>.txt.

    `classes` is the data set's class list (default: the 20 VOC classes, read without
    dataset.classes); `shape_names[k]` is the name written for shape k and must be one of
    `classes`. Labels and palette indices are the name's position in `classes` + 1.
    Object 1 of image 0 of each split is difficult. Expected `masks` are the boxes
    filled (VOC detection has no instance masks).
    """
    root = Path(root)
    class_names = list(classes) if classes is not None else list(VOC_CLASSES)
    label_of = [class_names.index(shape) + 1 for shape in shape_names]
    names = _split_names(splits, ("train", "val"))
    overrides = ["dataset=voc", f"dataset.root={root}", *_split_overrides(names)]
    if classes is not None:
        overrides.append(f"dataset.classes=[{','.join(class_names)}]")
    for folder in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Main", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    fixture = Fixture(root, overrides, class_names, list(range(1, len(class_names) + 1)), names)
    for split, name in names.items():
        fixture.images[split] = _write_voc_split(root, name, n, image_size, seed, label_of, class_names)
    return fixture
