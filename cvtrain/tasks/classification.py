"""Image classification (transfer learning): one label per image, top-k accuracy.

The task reads uint8 images, normalizes them on the device, and trains the chosen
classifier with the configured loss. Evaluation reports acc1/acc5 and balanced
accuracy and saves a confusion-matrix image; prediction prints the top classes of each
input image and saves them as an annotated grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cvtrain.engine.task import Task
from cvtrain.metrics.classification import ConfusionMatrix, TopKAccuracy, save_confusion_image
from cvtrain.registry import DATASETS, LOSSES, MODELS, TASKS
from cvtrain.tasks.figures import save_image_grid
from cvtrain.tasks.images import expand_inputs, load_image, normalize, random_hflip


@TASKS.register("classification")
class ClassificationTask(Task):
    name = "classification"

    def __init__(self, cfg):
        super().__init__(cfg)
        self._datasets: dict[str, Any] = {}
        self._meta: dict[str, Any] = {}
        self.loss_fn = LOSSES.get(cfg.loss.name, families=("classification",))(cfg.loss)

    # --- data and models ------------------------------------------------------
    def build_dataset(self, split: str):
        if split not in self._datasets:
            builder = DATASETS.get(self.cfg.dataset.name, families=("classification",))
            self._datasets[split] = builder(self.cfg.dataset, split)
        return self._datasets[split]

    @property
    def class_names(self) -> list[str]:
        if "class_names" not in self._meta:
            train = self.build_dataset("train")
            self._meta = {"class_names": list(train.class_names), "in_channels": int(train.in_channels)}
        return self._meta["class_names"]

    @property
    def in_channels(self) -> int:
        self.class_names  # noqa: B018  (fills the metadata)
        return self._meta["in_channels"]

    def build_models(self):
        builder = MODELS.get(self.cfg.model.name, families=tuple(self.cfg.task.families))
        model = builder(self.cfg.model, num_classes=len(self.class_names), in_channels=self.in_channels)
        return {"model": model}

    # --- training -------------------------------------------------------------
    def train_step(self, batch, step):
        images = batch["image"]
        if self.cfg.task.augment:
            images = random_hflip(images)
        logits = self.model(normalize(images))
        loss = self.loss_fn(logits, batch["label"])
        step("main", loss)
        return {"loss": loss.detach()}

    # --- evaluation -----------------------------------------------------------
    def start_eval(self, split: str) -> None:
        n = len(self.class_names)
        self.accuracy = TopKAccuracy(tuple(self.cfg.task.topk), n, self.device)
        self.confusion = ConfusionMatrix(n, self.device)

    def eval_step(self, batch) -> None:
        logits = self.model(normalize(batch["image"])).float()
        self.accuracy.update(logits, batch["label"])
        self.confusion.update(logits.argmax(dim=1), batch["label"])

    def finish_eval(self) -> dict[str, float]:
        self._matrix = self.confusion.matrix()
        return {**self.accuracy.compute(), **self.confusion.compute()}

    def save_outputs(self, out_dir: Path, tag: str) -> list[Path]:
        if not self.cfg.task.confusion_matrix:
            return []
        acc = float(self._matrix.diag().sum() / self._matrix.sum().clamp(min=1))
        title = f"{tag}: accuracy {acc:.3f}"
        return [save_confusion_image(self._matrix, self.class_names, out_dir / "confusion_matrix.png", title)]

    # --- prediction -----------------------------------------------------------
    @torch.inference_mode()
    def predict(self, out_dir: Path) -> list[dict[str, Any]]:
        inputs = expand_inputs(self.cfg.input)
        size, k = self.cfg.dataset.image_size, min(5, len(self.class_names))
        records, shown = [], []
        for start in range(0, len(inputs), 64):
            paths = inputs[start : start + 64]
            images = torch.stack([load_image(p, size, self.in_channels) for p in paths]).to(self.device)
            probs = self.model(normalize(images)).float().softmax(dim=1)
            top = probs.topk(k, dim=1)
            for path, image, p, idx in zip(paths, images, top.values.tolist(), top.indices.tolist()):
                names = [self.class_names[i] for i in idx]
                records.append({"input": str(path), "prediction": names[0], "score": p[0], "top": dict(zip(names, p))})
                shown.append((image.cpu(), f"{names[0]} {p[0]:.2f}"))
        if self.cfg.logger.images and shown:
            save_image_grid(shown[: self.cfg.logger.max_images], out_dir / "predictions.png")
        return records

    # --- checkpoint state -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"class_names": self.class_names, "in_channels": self.in_channels}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self._meta = {"class_names": list(state["class_names"]), "in_channels": int(state["in_channels"])}

