"""Semantic segmentation: label every pixel with an encoder-decoder; pixel accuracy and IoU.

The task reads uint8 images and masks, normalizes the images on the device and trains
the chosen segmenter with pixel cross-entropy (plus Dice when asked), ignoring pixels
labelled `ignore_index`. torchvision's models may add an auxiliary head, whose loss is
weighted by model.aux_weight (0.5, as in torchvision's references/segmentation/train.py).
Evaluation accumulates one confusion matrix over the split (pixel_acc, miou,
iou_<class>) and saves input / truth / prediction overlays; prediction writes a palette
PNG per input image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cvtrain.engine.task import Task
from cvtrain.metrics.segmentation import SegmentationIoU
from cvtrain.models.segmentation import split_outputs
from cvtrain.registry import DATASETS, LOSSES, MODELS, TASKS
from cvtrain.tasks.figures import save_image_grid
from cvtrain.tasks.images import expand_inputs, load_image, normalize, random_hflip
from cvtrain.tasks.palette import overlay, save_palette_png


@TASKS.register("segmentation")
class SegmentationTask(Task):
    name = "segmentation"

    def __init__(self, cfg):
        super().__init__(cfg)
        self._datasets: dict[str, Any] = {}
        self._meta: dict[str, Any] = {}
        self.loss_fn = LOSSES.get(cfg.loss.name, families=("segmentation",))(cfg.loss)

    # --- data and models ------------------------------------------------------
    def build_dataset(self, split: str):
        if split not in self._datasets:
            builder = DATASETS.get(self.cfg.dataset.name, families=("segmentation",))
            self._datasets[split] = builder(self.cfg.dataset, split)
        return self._datasets[split]

    def _metadata(self) -> dict[str, Any]:
        """Class names, ignore index and channels: from the train split, or the checkpoint."""
        if not self._meta:
            train = self.build_dataset("train")
            self._meta = {"class_names": list(train.class_names), "ignore_index": int(train.ignore_index),
                          "in_channels": int(train.in_channels)}
        return self._meta

    @property
    def class_names(self) -> list[str]:
        return self._metadata()["class_names"]

    @property
    def ignore_index(self) -> int:
        return self._metadata()["ignore_index"]

    def build_models(self):
        builder = MODELS.get(self.cfg.model.name, families=tuple(self.cfg.task.families))
        meta = self._metadata()
        return {"model": builder(self.cfg.model, num_classes=len(meta["class_names"]), in_channels=meta["in_channels"])}

    # --- training -------------------------------------------------------------
    def train_step(self, batch, step):
        images, masks = batch["image"], batch["mask"].long()
        if self.cfg.task.augment:
            images, masks = random_hflip(images, masks)
        logits, aux = split_outputs(self.model(normalize(images)))
        loss = self.loss_fn(logits, masks)
        if aux is not None:
            loss = loss + self.cfg.model.aux_weight * self.loss_fn(aux, masks)
        step("main", loss)
        return {"loss": loss.detach()}

    # --- evaluation -----------------------------------------------------------
    def start_eval(self, split: str) -> None:
        names = self.class_names
        self.iou = SegmentationIoU(len(names), names, self.ignore_index, self.device)
        self._shown: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def eval_step(self, batch) -> None:
        images, masks = batch["image"], batch["mask"].long()
        pred = self.segment(images)
        self.iou.update(pred, masks)
        room = self.cfg.logger.max_images - len(self._shown)
        if room > 0:
            self._shown.extend(zip(images[:room].cpu(), masks[:room].cpu(), pred[:room].cpu()))

    def finish_eval(self) -> dict[str, float]:
        return self.iou.compute()

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W) predicted class indices of uint8 images."""
        logits, _ = split_outputs(self.model(normalize(images)))
        return logits.argmax(dim=1)

    def save_outputs(self, out_dir: Path, tag: str) -> list[Path]:
        """Input, ground truth and prediction side by side (two samples per row)."""
        items = []
        for k, (image, mask, pred) in enumerate(self._shown):
            items += [(image, f"#{k}"), (overlay(image, mask), "truth"), (overlay(image, pred), "prediction")]
        if not items:
            return []
        return [save_image_grid(items, out_dir / "segmentation.png", cols=6)]

    # --- prediction -----------------------------------------------------------
    @torch.inference_mode()
    def predict(self, out_dir: Path) -> list[dict[str, Any]]:
        """Per image: the classes' pixel shares, a palette PNG of the mask at the image's
        own size (logits upsampled bilinearly before the argmax) and an overlay grid."""
        from PIL import Image

        paths = expand_inputs(self.cfg.input)
        size, channels = self.cfg.dataset.image_size, self._metadata()["in_channels"]
        mask_dir = (self.run_dir or out_dir.parent) / "masks"
        records, shown, used = [], [], set()
        for path in paths:
            with Image.open(path) as original:
                width, height = original.size
            image = load_image(path, size, channels).to(self.device)
            logits, _ = split_outputs(self.model(normalize(image[None])))
            mask = F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False).argmax(1)[0]
            mask_path = save_palette_png(mask.cpu().numpy().astype(np.uint8), mask_dir / _unique_name(path, used))
            shares = self.pixel_shares(mask)
            records.append({"input": str(path), "prediction": describe(shares), "shares": shares, "mask": str(mask_path)})
            small = F.interpolate(logits.float(), size=(size, size), mode="bilinear", align_corners=False).argmax(1)[0]
            shown += [(image.cpu(), path.name), (overlay(image.cpu(), small.cpu()), "prediction")]
        if self.cfg.logger.images and shown:
            save_image_grid(shown[: 2 * self.cfg.logger.max_images], out_dir / "segmentation.png", cols=6)
        return records

    def pixel_shares(self, mask: torch.Tensor) -> dict[str, float]:
        """{class: percent of the pixels}, largest first, background left out."""
        counts = torch.bincount(mask.flatten().cpu(), minlength=len(self.class_names)).tolist()
        total = max(1, sum(counts))
        shares = {name: 100.0 * c / total for name, c in zip(self.class_names, counts) if c and name != self.class_names[0]}
        return dict(sorted(shares.items(), key=lambda kv: -kv[1]))

    # --- checkpoint state -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return dict(self._metadata())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self._meta = {"class_names": list(state["class_names"]), "ignore_index": int(state["ignore_index"]),
                          "in_channels": int(state["in_channels"])}


def describe(shares: dict[str, float]) -> str:
    """'circle 12.1%, star 3.0%' (shares as pixel_shares gives them), or 'background only'."""
    return ", ".join(f"{name} {share:.1f}%" for name, share in shares.items()) or "background only"


def _unique_name(path: Path, used: set[str]) -> str:
    """<stem>.png, numbered when two inputs share a stem (a/x.jpg and b/x.jpg)."""
    name, k = f"{path.stem}.png", 1
    while name in used:
        name, k = f"{path.stem}-{k}.png", k + 1
    used.add(name)
    return name
