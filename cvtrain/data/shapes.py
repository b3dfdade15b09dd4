"""ShapesWorld as each task sees it: one embedded generator, one view per task.

The generator (`cvtrain.data.shapesworld`, numpy only) renders and caches the scenes;
this module turns a cached split into the tensors a task trains on.
"""

from __future__ import annotations

import torch

from cvtrain.data.memory import InMemoryDataset
from cvtrain.data.shapesworld import SHAPES, ShapesWorldSpec, load_split
from cvtrain.errors import UserError
from cvtrain.registry import DATASETS

SPLITS = ("train", "val", "test")


def load(cfg, split: str):
    """The cached ShapesWorld split described by a dataset config."""
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; ShapesWorld has {', '.join(SPLITS)}.")
    sizes = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}
    spec = ShapesWorldSpec(
        image_size=cfg.image_size, min_objects=cfg.min_objects, max_objects=cfg.max_objects, seed=cfg.seed
    )
    return load_split(split, sizes[split], spec, cache_dir=cfg.cache_dir)


@DATASETS.register("shapes", family="classification")
def shapes_classification(cfg, split: str) -> InMemoryDataset:
    """Images labelled with the shape of their main (largest) object."""
    data = load(cfg, split)
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(data.labels).long()
    return InMemoryDataset({"image": images, "label": labels}, class_names=list(SHAPES), in_channels=3)
