"""ShapesWorld: the embedded, seeded data set every cvtrain task can run on offline.

numpy only at import (pycocotools is imported inside to_coco): importing this package
must stay cheap and must not pull in torch. Typical use:

    from cvtrain.data.shapesworld import ShapesWorldSpec, load_split
    train = load_split("train", 8000, ShapesWorldSpec(seed=0))
    train.images, train.labels, train.instances(0), train.captions[0]
"""

from __future__ import annotations

from .coco import to_coco, to_coco_captions
from .render import to_grayscale
from .spec import COLOURS, GENERATOR_VERSION, SHAPES, ShapesWorldSpec
from .store import ShapesWorldSplit, clear_memo, generate_sample, generate_split, load_split, save_split

__all__ = [
    "COLOURS",
    "GENERATOR_VERSION",
    "SHAPES",
    "ShapesWorldSpec",
    "ShapesWorldSplit",
    "clear_memo",
    "generate_sample",
    "generate_split",
    "load_split",
    "save_split",
    "to_coco",
    "to_coco_captions",
    "to_grayscale",
]
