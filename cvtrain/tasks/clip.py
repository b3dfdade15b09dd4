"""CLIP contrastive pre-training: image and text encoders, scored zero-shot.

The loss is the symmetric cross-entropy over the global batch's image-text similarities
times a learnable scale (features all-gathered across DDP ranks with gradients, so the
negatives span the global batch), clamped at 100 after every optimizer step. Evaluation:
retrieval Recall@K both ways (as task=retrieval), and, when the data set has a
classification view (ShapesWorld: the main object's shape), zero-shot accuracy (each
class's text embedding is the mean of its prompt templates' embeddings) and
linear-probe accuracy (logistic regression on frozen image features, train -> split).
A trained checkpoint is scored the same way on any classification data set
(`mode=eval ckpt=PATH dataset=image_folder dataset.root=DIR`: zero-shot and probe only).
`mode=predict input=IMAGES labels=[circle,square]` ranks the labels for each image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cvtrain.errors import UserError
from cvtrain.metrics.linear_probe import linear_probe_accuracy
from cvtrain.models.classifiers import unwrap
from cvtrain.registry import DATASETS, TASKS
from cvtrain.tasks.contrastive import clip_loss
from cvtrain.tasks.figures import save_image_grid
from cvtrain.tasks.joint_embedding import JointEmbeddingTask


@TASKS.register("clip")
class ClipTask(JointEmbeddingTask):
    name = "clip"

    def __init__(self, cfg):
        super().__init__(cfg)
        self._labelled: dict[tuple, tuple[torch.Tensor, torch.Tensor, list[str]] | None] = {}

    def contrastive_loss(self, image: torch.Tensor, text: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        (scale,) = rest
        return clip_loss(image, text, scale)

    def after_optimizer_step(self, name: str) -> None:
        unwrap(self.models["model"]).clamp_scale()

    # --- data: captioned images to train on, any classification data set to score on --
    def captioned(self) -> bool:
        """Whether the data set has captions (ShapesWorld, COCO captions, a Karpathy split).
        One without (digits, CIFAR-10, an image folder) serves zero-shot and linear-probe
        scoring of a trained checkpoint: `mode=eval ckpt=PATH dataset=image_folder ...`."""
        from cvtrain.data.captions import CAPTIONED

        DATASETS.names()  # loads the builders, which fill CAPTIONED
        return self.cfg.dataset.name in CAPTIONED

    def _require_captions(self) -> None:
        from cvtrain.data.captions import CAPTIONED

        if not self.captioned():
            raise UserError(
                f"dataset={self.cfg.dataset.name} has no captions, and CLIP trains on captioned images "
                f"({', '.join(sorted(CAPTIONED))}); a classification data set scores a trained model "
                "zero-shot: mode=eval ckpt=PATH.")

    def build_dataset(self, split: str):
        self._require_captions()
        return super().build_dataset(split)

    def build_models(self):
        if not self.checkpoints:  # training: the vocabulary comes from the training captions
            self._require_captions()
        return super().build_models()

    def eval_batches(self, split: str, env):
        """Captioned data: a loader (retrieval scores). Without captions nothing to
        iterate: finish_eval scores the classification view alone."""
        return None if self.captioned() else []

    def labelled(self, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]] | None:
        """(uint8 RGB images at the model's input size, labels, class names) of the data
        set's classification view of `split` (a seeded random `limit` of it, in data set
        order: an image folder lists its classes one after another), or None when it has
        none (COCO captions). Only the images kept are read."""
        key = (split, limit)
        if key not in self._labelled:
            name = self.cfg.dataset.name
            view = None
            if name in DATASETS.names(("classification",)):
                data = DATASETS.get(name, families=("classification",))(self.cfg.dataset, split)
                kept = self._subset(len(data), limit)
                if hasattr(data, "fields"):
                    images, labels = data.fields["image"][kept], data.fields["label"][kept]
                else:
                    samples = [data[i] for i in kept.tolist()]
                    images = torch.stack([s["image"] for s in samples])
                    labels = torch.stack([torch.as_tensor(s["label"]) for s in samples])
                view = (self._as_inputs(images), labels, list(data.class_names))
            self._labelled[key] = view
        return self._labelled[key]

    def _subset(self, size: int, limit: int | None) -> torch.Tensor:
        if limit is None or limit >= size:
            return torch.arange(size)
        generator = torch.Generator().manual_seed(int(self.cfg.dataset.seed))
        return torch.randperm(size, generator=generator)[:limit].sort().values

    def _as_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 1|3, H, W) -> uint8 RGB at the model's input size (grey repeated)."""
        images = images.expand(-1, 3, -1, -1)
        size = self.input_size()
        if images.shape[-2:] == (size, size):
            return images
        resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return resized.round().clamp(0, 255).to(torch.uint8)

    def class_embeddings(self, names: list[str]) -> torch.Tensor:
        """(C, D): each class's prompt embeddings (task.templates) averaged, renormalised."""
        templates = list(self.cfg.task.templates)
        prompts = [t.format(n) for n in names for t in templates]
        embedded = self.embed_sentences(prompts).view(len(names), len(templates), -1)
        return F.normalize(embedded.mean(dim=1), dim=-1)

    # --- evaluation -----------------------------------------------------------
    def finish_eval(self) -> dict[str, float]:
        scores = super().finish_eval() if self.captioned() else {}
        view = self.labelled(self._eval_split) if self.cfg.task.zero_shot or self.cfg.task.linear_probe else None
        if view is None:
            return scores
        images, labels, names = view
        features = self.embed_all(images.to(self.device)).cpu()
        if self.cfg.task.zero_shot:
            predicted = (features @ self.class_embeddings(names).cpu().T).argmax(dim=1)
            scores["zero_shot_acc"] = float((predicted == labels).double().mean())
        if self.cfg.task.linear_probe:
            scores["linear_probe_acc"] = self.linear_probe(features, labels, len(names))
        return scores

    def linear_probe(self, features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
        """Probe accuracy on these features, fitted on task.probe_samples images of train."""
        train_images, train_labels, _ = self.labelled("train", self.cfg.task.probe_samples)
        train_features = self.embed_all(train_images.to(self.device)).cpu()
        return linear_probe_accuracy(train_features, train_labels, features, labels, num_classes,
                                     self.cfg.task.probe_weight_decay)

    # --- prediction -----------------------------------------------------------
    def label_names(self) -> list[str]:
        labels = self.cfg.labels
        if labels:  # a list (labels=[a,b]) or one comma-separated string (labels='"a,b"')
            parts = labels.split(",") if isinstance(labels, str) else [str(n) for n in labels]
            names = [n.strip() for n in parts if n.strip()]
        else:
            view = self.labelled("train", limit=1)  # the class names; one image read
            names = view[2] if view else []
        if not names:
            raise UserError("mode=predict: pass labels=[circle,square,triangle] (class names to rank), "
                            "or query='a sentence' to retrieve images.")
        return names

    def predict_images(self, paths: list[Path], out_dir: Path) -> list[dict[str, Any]]:
        """Each image's labels ranked by CLIP's softmax over scale x cosine similarity."""
        names = self.label_names()
        images = self.load_images(paths)
        scale = float(self.encoder.logit_scale.exp())
        probs = (scale * self.embed_all(images) @ self.class_embeddings(names).T).softmax(dim=1)
        records, shown = [], []
        for path, image, p in zip(paths, images, probs.tolist()):
            ranked = dict(sorted(zip(names, p), key=lambda item: -item[1]))
            best = next(iter(ranked))
            records.append({"input": str(path), "prediction": best, "score": ranked[best], "top": ranked})
            shown.append((image.cpu(), f"{best} {ranked[best]:.2f}"))
        if self.cfg.logger.images:
            save_image_grid(shown[: self.cfg.logger.max_images], out_dir / "predictions.png")
        return records
