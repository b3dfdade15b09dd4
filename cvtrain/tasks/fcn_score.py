"""The FCN-score (pix2pix, Isola et al. 2017, section 4.2): does a generated image show
the scene its label map asked for? A segmentation network trained on real images
segments the generated ones, and its pixel accuracy and mIoU against the input labels
are reported, beside the same scores on the real images (the ceiling: the segmenter's
own errors). A blurry or wrong output loses pixels; a sharp, plausible one scores like
the real image.

The paper used an FCN-8s trained on Cityscapes. Here the segmenter is cvtrain's own:
the segmentation task's U-Net, trained by that task's step on ShapesWorld's real images
and masks (`cvtrain task=segmentation`'s recipe, scaled down), once per machine, and
cached under $CVTRAIN_CACHE/scorers/ by a hash of everything that defines it (as the
FID's feature network is, cvtrain/metrics/generative/features.py), so scores computed
on different days and machines compare. Training is seeded, on one thread and on its
own random stream: the same recipe gives the same weights, and a training run that
first needs the segmenter goes on with its random numbers untouched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import torch

# Bump when the segmenter's training changes in a way the recipe does not capture.
SEGMENTER_VERSION = 1


@dataclasses.dataclass(frozen=True)
class SegmenterRecipe:
    """Everything that defines the FCN-score's segmenter: its hash names the cache file."""

    image_size: int = 32  # ShapesWorld rendered at this size (the translation's dataset.image_size)
    num_train: int = 4000
    epochs: int = 3
    width: int = 16  # the U-Net of conf/model/unet.yaml
    depth: int = 3
    batch_size: int = 16  # conf/task/segmentation.yaml's: small batches learn hexagon vs circle
    lr: float = 3e-3
    data_seed: int = 0
    seed: int = 0

    def key(self) -> str:
        from cvtrain.data.shapesworld import GENERATOR_VERSION

        what = {"recipe": dataclasses.asdict(self), "arch": "unet+ce+hflip", "generator": GENERATOR_VERSION,
                "version": SEGMENTER_VERSION}
        return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()

    def config(self):
        """The config a `task=segmentation model=unet` run of this recipe composes to (the
        keys the segmentation task, its data set, model and loss read)."""
        from omegaconf import OmegaConf

        return OmegaConf.create({
            "task": {"name": "segmentation", "families": ["segmenter"], "augment": True},
            "model": {"name": "unet", "width": self.width, "depth": self.depth, "dropout": 0.0, "weights": None},
            "loss": {"name": "cross_entropy", "ignore_index": 255, "dice_weight": 0.0, "label_smoothing": 0.0},
            "dataset": {"name": "shapes", "image_size": self.image_size, "min_objects": 1, "max_objects": 4,
                        "seed": self.data_seed, "cache_dir": None, "num_train": self.num_train, "num_val": 1,
                        "num_test": 1},
        })


def segmenter_cache_file(recipe: SegmenterRecipe) -> Path:
    from cvtrain.metrics.generative.features import cache_root

    return cache_root() / "scorers" / f"shapesworld-segmenter-{recipe.key()[:20]}.pt"


def shapesworld_segmenter(recipe: SegmenterRecipe, device="cpu", quiet: bool = False):
    """The segmentation task (its model in eval mode on `device`) of `recipe`: loaded from
    the cache, else trained (a minute or two on a CPU) and cached."""
    from cvtrain.metrics.generative.features import _load_cached, _save_atomic
    from cvtrain.tasks.segmentation import SegmentationTask

    task = SegmentationTask(recipe.config())
    path = segmenter_cache_file(recipe)
    with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        task.models = task.build_models()
        task.active = dict(task.models)
        if not _load_cached(task.models["model"], path, recipe.key()):
            if not quiet:
                print(f"training the FCN-score's ShapesWorld segmenter once (cached in {path})", file=sys.stderr)
            _train(task, recipe)
            state = {k: v.detach().clone() for k, v in task.models["model"].state_dict().items()}
            _save_atomic(path, {"key": recipe.key(), "state_dict": state}, "the FCN-score's segmenter")
    task.models["model"].eval().to(device)
    task.device = torch.device(device)
    return task


def _train(task, recipe: SegmenterRecipe) -> None:
    """Adam over the seeded shuffled training split, one thread, through the task's own step."""
    data = task.build_dataset("train")
    model = task.models["model"]
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)

    def step(name: str, loss: torch.Tensor) -> None:
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator = torch.Generator().manual_seed(recipe.seed)
        model.train()
        for _ in range(recipe.epochs):
            order = torch.randperm(len(data), generator=generator)
            for i in range(0, len(order) - recipe.batch_size + 1, recipe.batch_size):
                task.train_step(data.batch(order[i : i + recipe.batch_size]), step)
    finally:
        torch.set_num_threads(threads)
        model.eval()


class FCNScore:
    """Pixel accuracy and mIoU of the segmenter on generated images against the labels
    they were generated from (fcn_pixel_acc, fcn_miou), on the real images
    (fcn_pixel_acc_real, fcn_miou_real), and the share of the real images' mIoU the
    generated ones reach (fcn_miou_ratio). Confusion matrices summed across ranks."""

    def __init__(self, segmenter, device):
        from cvtrain.metrics.segmentation import SegmentationIoU

        self.segmenter = segmenter
        names = segmenter.class_names
        self.fake = SegmentationIoU(len(names), names, segmenter.ignore_index, device)
        self.real = SegmentationIoU(len(names), names, segmenter.ignore_index, device)

    @torch.no_grad()
    def update(self, generated: torch.Tensor, real: torch.Tensor, masks: torch.Tensor) -> None:
        """uint8 (B, 3, H, W) generated and real images of the (B, H, W) label maps `masks`."""
        masks = masks.long()
        self.fake.update(self.segmenter.segment(generated), masks)
        self.real.update(self.segmenter.segment(real), masks)

    def compute(self) -> dict[str, float]:
        fake, real = self.fake.compute(), self.real.compute()
        ratio = fake["miou"] / real["miou"] if real["miou"] > 0 else 0.0
        return {"fcn_pixel_acc": fake["pixel_acc"], "fcn_miou": fake["miou"], "fcn_pixel_acc_real": real["pixel_acc"],
                "fcn_miou_real": real["miou"], "fcn_miou_ratio": ratio}
