"""Sentence-to-image retrieval (VSE++): a CNN and a GRU trained into one space.

loss=vse_hinge (hardest negatives, VSE++; loss.max_violation=false sums over all, VSE0)
or loss=infonce. Evaluation: Recall@1/5/10, median and mean rank, sentence -> image and
image -> sentence, as the COCO 1K protocol (the split's images, all their captions);
best.pt by task.monitor (rsum). `mode=predict query="a small red circle"` returns the
best images; `mode=predict input=IMAGES` the best sentences of split= for each image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cvtrain.registry import LOSSES, TASKS
from cvtrain.tasks.contrastive import cross_scores
from cvtrain.tasks.figures import save_image_grid
from cvtrain.tasks.joint_embedding import JointEmbeddingTask


@TASKS.register("retrieval")
class RetrievalTask(JointEmbeddingTask):
    name = "retrieval"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.loss_fn = LOSSES.get(cfg.loss.name, families=("retrieval",))(cfg.loss)

    def contrastive_loss(self, image: torch.Tensor, text: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(*cross_scores(image, text), epoch=self.epoch)

    def predict_images(self, paths: list[Path], out_dir: Path) -> list[dict[str, Any]]:
        """The task.top_k best sentences of split= (its distinct captions) for each image."""
        sentences = sorted({c for refs in self.splits.captioned(self.cfg.split).references for c in refs})
        size = self.cfg.dataset.eval_batch_size
        texts = torch.cat([self.embed_sentences(sentences[i : i + size]) for i in range(0, len(sentences), size)])
        images = self.load_images(paths)
        top = (self.embed_all(images) @ texts.T).topk(min(self.cfg.task.top_k, len(sentences)), dim=1)
        records, shown = [], []
        for path, image, scores, indices in zip(paths, images, top.values.tolist(), top.indices.tolist()):
            ranked = [{"sentence": sentences[i], "score": s} for s, i in zip(scores, indices)]
            records.append({"input": str(path), "prediction": ranked[0]["sentence"], "score": scores[0], "top": ranked})
            shown.append((image.cpu(), ranked[0]["sentence"]))
        if self.cfg.logger.images:
            save_image_grid(shown[: self.cfg.logger.max_images], out_dir / "sentences.png", cols=4, wrap=34)
        return records
