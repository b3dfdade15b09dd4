"""The data sets a generative task trains on: every classification data set's images.

A GAN or a diffusion model reads the same images and labels as a classifier;
the labels matter only to class-conditional models. Registering each classification
builder under the `gan` and `diffusion` families too keeps the rule the config check relies on: a data
set feeds a task exactly when a builder of that name is registered for it.
"""

from __future__ import annotations

from cvtrain.registry import DATASETS

IMAGE_DATA_SETS = ("shapes", "digits", "mnist", "cifar10", "image_folder")
GENERATIVE_TASKS = ("gan", "diffusion")


def _images_of(name: str):
    def build(cfg, split: str):
        return DATASETS.get(name, families=("classification",))(cfg, split)

    build.__name__ = build.__qualname__ = f"{name}_images"
    return build


for _name in IMAGE_DATA_SETS:
    _builder = _images_of(_name)
    for _task in GENERATIVE_TASKS:
        DATASETS.register(_name, family=_task)(_builder)
