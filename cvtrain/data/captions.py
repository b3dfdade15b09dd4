"""Captioned images: ShapesWorld's five captions per scene, a COCO captions json, or a
Karpathy split json (dataset_coco.json). They feed captioning, retrieval and CLIP.

A builder returns `CaptionedImages`: the raw reference captions of every image (what
the scorers compare with) and the images themselves, in memory (ShapesWorld) or as
files read lazily (COCO). The task tokenizes the captions with its vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from cvtrain.data.image_files import first_missing, verify_images, wants_verify
from cvtrain.errors import UserError
from cvtrain.registry import DATASETS

SPLIT_FRACTIONS = {"train": (0.0, 0.9), "val": (0.9, 0.95), "test": (0.95, 1.0)}


@dataclass
class CaptionedImages:
    references: list[list[str]]  # the raw captions of each image
    image_ids: list[int]
    images: torch.Tensor | None = None  # uint8 (N, C, H, W), when held in memory
    paths: list[Path] | None = None  # image files, read at dataset.image_size

    def __len__(self) -> int:
        return len(self.references)


FAMILIES = ("captioning", "retrieval", "clip")  # the tasks that train on captioned images


CAPTIONED: set[str] = set()  # the data sets with captions (CLIP also scores classification sets)


def _register(name: str):
    """Register a builder of captioned images under `name` for every task that reads them."""

    def decorate(builder):
        CAPTIONED.add(name)
        for family in FAMILIES:
            DATASETS.register(name, family=family)(builder)
        return builder

    return decorate


@_register("shapes")
def shapes_captions(cfg, split: str) -> CaptionedImages:
    """dataset.captions picks ShapesWorld's varied captions or its detailed ones."""
    from cvtrain.data.shapes import load

    data = load(cfg, split)
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous()
    captions = data.detailed_captions if getattr(cfg, "captions", "varied") == "detailed" else data.captions
    return CaptionedImages([list(c) for c in captions], list(range(len(data))), images=images)


@_register("coco_captions")
def coco_captions(cfg, split: str) -> CaptionedImages:
    """COCO captions format: dataset.annotations (captions_*.json) and dataset.root (its
    images). One file is split by image into train/val/test (90/5/5 %, seeded)."""
    annotations = _require_file(cfg.annotations, "dataset.annotations", "a COCO captions json (captions_*.json)")
    root = _require_root(cfg)
    images, captions = _read_coco(annotations)
    ids = sorted(captions)
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    start, end = SPLIT_FRACTIONS[split]
    chosen = [ids[i] for i in order[int(start * len(ids)) : int(end * len(ids))]]
    paths = [root / images[i] for i in chosen]
    _check_images(cfg, paths, [root / images[i] for i in ids], annotations)
    return CaptionedImages([captions[i] for i in chosen], chosen, paths=paths)


@_register("karpathy")
def karpathy_split(cfg, split: str) -> CaptionedImages:
    """Karpathy's split json (dataset_coco.json, dataset_flickr30k.json): images[] with
    split (train, restval, val, test), filepath (optional), filename and sentences[].raw;
    dataset.root holds the images. restval joins train, as VSE++ and most papers train."""
    annotations = _require_file(cfg.annotations, "dataset.annotations", "a Karpathy split json (dataset_coco.json)")
    root = _require_root(cfg)
    entries = _read_karpathy(annotations)
    wanted = {"train": ("train", "restval")}.get(split, (split,))
    chosen = [e for e in entries if e["split"] in wanted]
    if not chosen:
        raise UserError(f"dataset.annotations: '{annotations}' has no image in split '{split}'.")
    paths = [root / e["path"] for e in chosen]
    _check_images(cfg, paths, [root / e["path"] for e in entries], annotations)
    return CaptionedImages([e["sentences"] for e in chosen], [e["id"] for e in chosen], paths=paths)


def _read_karpathy(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
        entries = [{"split": str(im["split"]), "id": int(im.get("cocoid", im.get("imgid", i))),
                    "path": str(Path(im.get("filepath", "")) / im["filename"]),
                    "sentences": [str(s["raw"]) for s in im["sentences"]]} for i, im in enumerate(data["images"])]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise UserError(f"dataset.annotations: '{path}' is not a Karpathy split json ({type(error).__name__}: "
                        f"{error}); it needs images[split, filename, sentences[raw]].") from error
    empty = next((e["path"] for e in entries if not e["sentences"]), None)
    if empty:
        raise UserError(f"dataset.annotations: image '{empty}' in '{path}' has no sentence.")
    return entries


def _require_root(cfg) -> Path:
    root = Path(str(cfg.root or "")).expanduser()
    if not cfg.root or not root.is_dir():
        raise UserError(f"dataset.root: no such folder '{cfg.root}'; pass dataset.root=FOLDER holding the json's images.")
    return root


def _check_images(cfg, paths: list[Path], every: list[Path], annotations: Path) -> None:
    """The split's images exist; with dataset.verify, every image of the json (all splits
    at once: one list of all unreadable ones) decodes."""
    missing = first_missing(paths)
    if missing:
        raise UserError(f"dataset.root: image '{missing}' named in {annotations.name} is missing; "
                        "point dataset.root at the folder of that json's images.")
    if wants_verify(cfg):
        verify_images(every)


def _require_file(value, key: str, what: str) -> Path:
    if not value:
        raise UserError(f"{key} is required but not set; pass {key}=PATH of {what}.")
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise UserError(f"{key}: no such file '{path}'; pass {key}=PATH of {what}.")
    return path


def _read_coco(path: Path) -> tuple[dict[int, str], dict[int, list[str]]]:
    try:
        data = json.loads(path.read_text())
        images = {int(im["id"]): im["file_name"] for im in data["images"]}
        captions: dict[int, list[str]] = {}
        for ann in data["annotations"]:
            captions.setdefault(int(ann["image_id"]), []).append(str(ann["caption"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise UserError(f"dataset.annotations: '{path}' is not a COCO captions json ({type(error).__name__}: "
                        f"{error}); it needs images[id, file_name] and annotations[image_id, caption].") from error
    unknown = set(captions) - set(images)
    if unknown:
        raise UserError(f"dataset.annotations: captions refer to image id {min(unknown)} that '{path}' does not list.")
    return images, captions
