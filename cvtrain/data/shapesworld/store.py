"""A whole split as numpy arrays, rendered once and cached on disk.

Sample i of a split is drawn from generators seeded with (spec.seed, split id, i), so
it can be regenerated alone and does not depend on how many samples are generated.
The cache is one .npz (arrays) + one .json (text) per (GENERATOR_VERSION, spec, split,
num_samples), written atomically; a cache that fails to load or does not carry the
expected key is regenerated, never trusted and never fatal.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .language import captions, detailed_captions, questions
from .render import render_all
from .scene import Obj, Scene, sample_scene
from .situations import situation
from .spec import GENERATOR_VERSION, SHAPES, ShapesWorldSpec, split_id

log = logging.getLogger(__name__)

# Seed streams per sample: changing the grammar must not change the pixels, and vice versa.
# The detailed captions are drawn at load time from the stored objects, so adding them
# changed no cache.
_SCENE, _PIXELS, _TEXT, _DETAILED_TEXT = 0, 1, 2, 3
_MEMO: dict[str, "ShapesWorldSplit"] = {}


@dataclass
class ShapesWorldSplit:
    """N samples; per-instance arrays are flat, sample i owning rows
    instance_offsets[i]:instance_offsets[i + 1]. Shared through an in-process memo:
    treat the arrays as read-only (copy before modifying in place)."""

    split: str
    spec: ShapesWorldSpec
    images: np.ndarray  # uint8 (N, H, W, 3)
    labels: np.ndarray  # int64 (N,): class index 0..5 of the main object's shape
    semantic: np.ndarray  # uint8 (N, H, W): 0 background, 1..6 shape class id
    striped: np.ndarray  # uint8 (N, H, W, 3): the same scenes with striped shapes
    edges: np.ndarray  # uint8 (N, H, W): 255 on instance boundaries
    boxes: np.ndarray  # float32 (M, 4): xyxy, pixel edges
    classes: np.ndarray  # int64 (M,): 1..6
    packed_masks: np.ndarray  # uint8 (M, H, ceil(W / 8)): np.packbits(masks, axis=-1)
    instance_offsets: np.ndarray  # int64 (N + 1,)
    captions: list[list[str]]  # five per sample
    questions: list[list[dict]]  # {"question", "answer", "answers" (ten), "type"}
    situations: list[dict]  # {"verb", "frames": three {role: noun}} (situations.py)
    objects: list[list[dict]]  # per object: shape, colour, size, centre, radius, angle

    class_names = SHAPES

    def __len__(self) -> int:
        return len(self.images)

    @cached_property
    def masks(self) -> np.ndarray:
        """bool (M, H, W) visible pixels of every instance, unpacked on first use: the
        tasks that need no masks never pay for them (100 MB per 10,000 samples)."""
        return _unpack(self.packed_masks, self.spec.image_size)

    def instances(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes (k, 4), classes (k,), masks bool (k, H, W)) of sample i, main object first."""
        lo, hi = self.instance_offsets[i], self.instance_offsets[i + 1]
        if "masks" in self.__dict__:
            masks = self.masks[lo:hi]
        else:
            masks = _unpack(self.packed_masks[lo:hi], self.spec.image_size)
        return self.boxes[lo:hi], self.classes[lo:hi], masks

    @cached_property
    def detailed_captions(self) -> list[list[str]]:
        """Five captions per sample that each name every object in full (language.py:
        detailed_captions), for retrieval; seeded per sample like everything else."""
        seed, split = self.spec.seed, split_id(self.split)
        return [
            detailed_captions([Obj.from_dict(o) for o in objects], np.random.default_rng([seed, split, i, _DETAILED_TEXT]))
            for i, objects in enumerate(self.objects)
        ]

    def text_corpus(self) -> list[str]:
        """All captions, one sentence per item, in sample order (language modelling)."""
        return [caption for sample in self.captions for caption in sample]


def _unpack(packed: np.ndarray, width: int) -> np.ndarray:
    return np.unpackbits(packed, axis=-1, count=width).view(bool)


def generate_sample(spec: ShapesWorldSpec, split: str, index: int) -> dict[str, Any]:
    """Every annotation of sample `index` of `split`, independent of any other sample."""
    seeds = [spec.seed, split_id(split), index]
    scene = sample_scene(np.random.default_rng(seeds + [_SCENE]), spec)
    drawn = render_all(scene, spec, np.random.default_rng(seeds + [_PIXELS]))
    if len(drawn.kept) < len(scene.objects):  # wholly hidden: the text must not mention it
        scene = Scene(scene.background, scene.background_params, [scene.objects[i] for i in drawn.kept])
    text_rng = np.random.default_rng(seeds + [_TEXT])
    return {
        "image": drawn.image,
        "striped": drawn.striped,
        "semantic": drawn.semantic,
        "edges": drawn.edges,
        "label": SHAPES.index(scene.main.shape),
        "boxes": drawn.boxes,
        "classes": drawn.classes,
        "masks": drawn.masks,
        "captions": captions(scene, text_rng),
        "questions": questions(scene, text_rng),
        "situation": situation(scene, text_rng),  # drawn after the questions: they stay as they were
        "objects": [obj.to_dict() for obj in scene.objects],
    }


def generate_split(split: str, num_samples: int, spec: ShapesWorldSpec) -> ShapesWorldSplit:
    """Render num_samples samples of a split in memory (no cache), one at a time into
    preallocated arrays so that peak memory stays near the size of the result."""
    n, size = num_samples, spec.image_size
    images = np.empty((n, size, size, 3), np.uint8)
    striped = np.empty_like(images)
    semantic = np.empty((n, size, size), np.uint8)
    edges = np.empty_like(semantic)
    labels = np.empty(n, np.int64)
    offsets = np.zeros(n + 1, np.int64)
    boxes, classes, masks = [np.zeros((0, 4), np.float32)], [np.zeros(0, np.int64)], [np.zeros((0, size, size), bool)]
    texts: dict[str, list] = {"captions": [], "questions": [], "situations": [], "objects": []}
    for i in range(n):
        s = generate_sample(spec, split, i)
        images[i], striped[i], semantic[i], edges[i] = s["image"], s["striped"], s["semantic"], s["edges"]
        labels[i] = s["label"]
        offsets[i + 1] = offsets[i] + len(s["classes"])
        boxes.append(s["boxes"])
        classes.append(s["classes"])
        masks.append(s["masks"])
        texts["captions"].append(s["captions"])
        texts["questions"].append(s["questions"])
        texts["situations"].append(s["situation"])
        texts["objects"].append(s["objects"])
    all_masks = np.concatenate(masks)
    data = ShapesWorldSplit(
        split, spec, images, labels, semantic, striped, edges,
        boxes=np.concatenate(boxes), classes=np.concatenate(classes),
        packed_masks=np.packbits(all_masks, axis=-1), instance_offsets=offsets, **texts,
    )
    data.masks = all_masks  # already at hand: fill the cache instead of unpacking later
    return data


# --- cache -----------------------------------------------------------------------


def cache_key(split: str, num_samples: int, spec: ShapesWorldSpec) -> str:
    """sha1 of everything that determines the data."""
    what = {"version": GENERATOR_VERSION, "spec": dataclasses.asdict(spec), "split": split, "n": num_samples}
    return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()


def default_cache_dir(cache_dir: str | None = None) -> Path:
    """cache_dir, else $CVTRAIN_CACHE/shapesworld, else ~/.cache/cvtrain/shapesworld."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    root = os.environ.get("CVTRAIN_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "cvtrain") / "shapesworld"


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see a
    half-written file (os.replace is atomic on one file system)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# The text goes to JSON as columns of newline-joined strings: parsing a few long strings
# is about ten times faster than parsing a million small JSON objects.
_QUESTION_KEYS = ("question", "answer", "type")
_OBJECT_KEYS = ("shape", "colour", "size")


def _lines(items: list[str]) -> str:
    if any("\n" in item for item in items):
        raise ValueError("text annotations must not contain newlines")
    return "\n".join(items)


def _unlines(text: str) -> list[str]:
    return text.split("\n") if text else []


def _chunks(items: list, counts: list[int]) -> list[list]:
    """Regroup a flat list into per-sample lists of the given lengths."""
    out, start = [], 0
    for count in counts:
        out.append(items[start : start + count])
        start += count
    if start != len(items):
        raise ValueError("text columns do not add up")
    return out


def _encode_text(data: ShapesWorldSplit) -> dict:
    qs = [q for sample in data.questions for q in sample]
    objs = [o for sample in data.objects for o in sample]
    return {
        "captions": _lines([c for sample in data.captions for c in sample]),
        "captions_per_sample": [len(sample) for sample in data.captions],
        "questions": {k: _lines([q[k] for q in qs]) for k in _QUESTION_KEYS}
        | {"answers": _lines(["|".join(q["answers"]) for q in qs])},
        "questions_per_sample": [len(sample) for sample in data.questions],
        "situations": {"verb": _lines([s["verb"] for s in data.situations]),
                       "frames": _lines([json.dumps(s["frames"], separators=(",", ":")) for s in data.situations])},
        "objects": {k: _lines([o[k] for o in objs]) for k in _OBJECT_KEYS}
        | {"geometry": [v for o in objs for v in (*o["centre"], o["radius"], o["angle"])]},
        "objects_per_sample": [len(sample) for sample in data.objects],
    }


def _decode_text(text: dict) -> dict[str, list]:
    q = {k: _unlines(v) for k, v in text["questions"].items()}
    questions = [
        {"question": question, "answer": answer, "answers": answers.split("|"), "type": kind}
        for question, answer, answers, kind in zip(q["question"], q["answer"], q["answers"], q["type"])
    ]
    s = {k: _unlines(v) for k, v in text["situations"].items()}
    situations = [{"verb": verb, "frames": json.loads(frames)} for verb, frames in zip(s["verb"], s["frames"])]
    o = {k: _unlines(text["objects"][k]) for k in _OBJECT_KEYS}
    g = text["objects"]["geometry"]
    objects = [
        {"shape": shape, "colour": colour, "size": size, "centre": g[4 * i : 4 * i + 2],
         "radius": g[4 * i + 2], "angle": g[4 * i + 3]}
        for i, (shape, colour, size) in enumerate(zip(o["shape"], o["colour"], o["size"]))
    ]
    return {
        "captions": _chunks(_unlines(text["captions"]), text["captions_per_sample"]),
        "questions": _chunks(questions, text["questions_per_sample"]),
        "situations": situations,
        "objects": _chunks(objects, text["objects_per_sample"]),
    }


def _without_gc(fn: Callable, *args: Any) -> Any:
    """Run fn with the cyclic GC paused: building ~10^5 small dicts and lists otherwise
    triggers dozens of full collections, which doubles the time to decode the text."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return fn(*args)
    finally:
        if enabled:
            gc.enable()


def _save(data: ShapesWorldSplit, npz: Path, meta: Path, key: str) -> None:
    arrays = {
        "key": np.frombuffer(key.encode(), np.uint8),
        "images": data.images, "labels": data.labels, "semantic": data.semantic,
        "striped": data.striped, "boxes": data.boxes, "classes": data.classes,
        "instance_offsets": data.instance_offsets,
        # Bit-packed: 8x smaller on disk, and unpacking is faster than reading.
        "masks": data.packed_masks, "edges": np.packbits(data.edges > 0, axis=-1),
    }
    text = {"key": key} | _encode_text(data)
    npz.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(npz, lambda f: np.savez(f, **arrays))
    _atomic_write(meta, lambda f: f.write(json.dumps(text, separators=(",", ":")).encode()))


def _load(split: str, num_samples: int, spec: ShapesWorldSpec, npz: Path, meta: Path, key: str) -> ShapesWorldSplit:
    """Read a cache pair; raises if anything is missing, corrupt or for another key.
    (Zip members carry a CRC-32 that numpy checks as it reads: corrupt bytes raise.)"""
    text = json.loads(meta.read_bytes())
    if text.get("key") != key:
        raise ValueError("cache key mismatch in the .json")
    with np.load(npz, allow_pickle=False) as f:
        if f["key"].tobytes().decode() != key:
            raise ValueError("cache key mismatch in the .npz")
        a = {name: f[name] for name in ("images", "labels", "semantic", "striped", "boxes",
                                        "classes", "instance_offsets")}
        a["packed_masks"] = f["masks"]
        a["edges"] = _unpack(f["edges"], spec.image_size).view(np.uint8) * np.uint8(255)
    data = ShapesWorldSplit(split, spec, **a, **_without_gc(_decode_text, text))
    lengths = {len(data.labels), len(data.captions), len(data.questions), len(data.situations),
               len(data.objects), len(data.instance_offsets) - 1}
    size = spec.image_size
    if (lengths != {num_samples} or data.images.shape[1:] != (size, size, 3)
            or not data.instance_offsets[-1] == len(data.boxes) == len(data.packed_masks)):
        raise ValueError("cache content does not match its key")
    return data


def cache_paths(split: str, num_samples: int, spec: ShapesWorldSpec, cache_dir: str | None = None) -> tuple[Path, Path]:
    """(.npz, .json) cache files of a split; the name carries the key, so a new
    GENERATOR_VERSION or spec never reads an old file."""
    key = cache_key(split, num_samples, spec)
    name = f"{re.sub(r'[^A-Za-z0-9_-]', '_', split)}-{num_samples}-{key[:20]}"
    folder = default_cache_dir(cache_dir)
    return folder / f"{name}.npz", folder / f"{name}.json"


def save_split(data: ShapesWorldSplit, cache_dir: str | None = None) -> Path:
    """Write a split to its cache files (atomically); returns the .npz path."""
    npz, meta = cache_paths(data.split, len(data), data.spec, cache_dir)
    _save(data, npz, meta, cache_key(data.split, len(data), data.spec))
    return npz


def load_split(
    split: str, num_samples: int, spec: ShapesWorldSpec | None = None, cache_dir: str | None = None
) -> ShapesWorldSplit:
    """The split from the in-process memo, else from the disk cache, else rendered (and
    then cached). A cache that cannot be read is logged and regenerated; a cache folder
    that cannot be written only costs a warning."""
    spec = spec or ShapesWorldSpec()
    npz, meta = cache_paths(split, num_samples, spec, cache_dir)
    if str(npz) in _MEMO:
        return _MEMO[str(npz)]
    data = None
    if npz.exists() and meta.exists():
        try:
            data = _load(split, num_samples, spec, npz, meta, cache_key(split, num_samples, spec))
        except Exception as err:  # any unreadable cache is regenerated, whatever the cause
            log.warning("ShapesWorld cache %s unreadable (%s: %s); regenerating", npz, type(err).__name__, err)
    if data is None:
        data = generate_split(split, num_samples, spec)
        try:
            save_split(data, cache_dir)
        except OSError as err:
            log.warning("ShapesWorld cache not written to %s: %s", npz.parent, err)
    _MEMO[str(npz)] = data
    return data


def clear_memo() -> None:
    """Forget splits held in memory (the disk cache stays)."""
    _MEMO.clear()
