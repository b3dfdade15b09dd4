"""What retrieval (VSE++) and CLIP share: captioned data, a contrastive step, recall scores.

A training step embeds each image and one of its captions (drawn anew each step) and
hands the batch's similarities, against every rank's features, to the task's loss.
Evaluation embeds every image of the split and every one of its real captions, gathers
them from all ranks, and scores retrieval both ways with the COCO protocol
(cvtrain/metrics/retrieval.py). `mode=predict query="..."` returns the top-k images of
a gallery (input= images, else the split's) and saves them as a grid; subclasses say
what `input=` images alone predict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cvtrain.engine.distributed import gather_objects
from cvtrain.engine.task import Task
from cvtrain.errors import UserError
from cvtrain.metrics.retrieval import retrieval_scores
from cvtrain.models.classifiers import unwrap
from cvtrain.registry import MODELS
from cvtrain.tasks.captioned_data import CaptionedSplits, draw_captions
from cvtrain.tasks.images import expand_inputs, load_image, normalize
from cvtrain.tasks.sample_grids import save_grid


class JointEmbeddingTask(Task):
    """Base of the tasks whose model maps images and sentences into one space."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.splits = CaptionedSplits(cfg, self.name)
        self._eval_split = "val"
        self.checkpoints: dict[str, dict] = {}  # set by the app in eval / predict: every loaded checkpoint

    # --- data and model -------------------------------------------------------
    def build_dataset(self, split: str):
        return self.splits.dataset(split)

    def build_models(self) -> dict[str, nn.Module]:
        builder = MODELS.get(self.cfg.model.name, families=tuple(self.cfg.task.families))
        model = builder(self.cfg.model, vocab_size=len(self.splits.vocabulary()), image_size=self.input_size())
        return {"model": model}

    def input_size(self) -> int:
        """The image size the model takes (a data set evaluated or predicted from may be
        read at another size)."""
        return int(self.trained_with("image_size"))

    def trained_with(self, key: str):
        """dataset.`key` as the model was trained: its checkpoint's, when one is loaded (the
        data set scored may be another one, without captions), else this run's."""
        for state in self.checkpoints.values():
            return state["config"]["dataset"][key]
        return self.cfg.dataset[key]

    @property
    def encoder(self) -> nn.Module:
        """The plain model (not its EMA or compile wrapper), for encode_image/encode_text."""
        return unwrap(self.model)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode_image(normalize(images)).float()

    def embed_sentences(self, sentences: list[str]) -> torch.Tensor:
        tokens = self.splits.encode(sentences, int(self.trained_with("max_caption_len")))
        return self.encoder.encode_text(tokens.to(self.device)).float()

    # --- training -------------------------------------------------------------
    def train_step(self, batch, step):
        tokens = draw_captions(batch["captions"], batch["num_captions"])
        loss = self.contrastive_loss(*self.model(normalize(batch["image"]), tokens))
        step("main", loss)
        return {"loss": loss.detach()}

    def contrastive_loss(self, image: torch.Tensor, text: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        """The loss of one batch of matching embeddings (and what else the model returns)."""
        raise NotImplementedError

    # --- evaluation -----------------------------------------------------------
    def start_eval(self, split: str) -> None:
        self._eval_split = split
        self._images: list[tuple[torch.Tensor, torch.Tensor]] = []  # (indices, embeddings)
        self._texts: list[tuple[torch.Tensor, torch.Tensor]] = []  # (image index of each caption, embeddings)

    def eval_step(self, batch) -> None:
        index, captions, counts = batch["index"], batch["captions"], batch["num_captions"]
        self._images.append((index.cpu(), self.embed_images(batch["image"]).cpu()))
        real = torch.arange(captions.shape[1], device=counts.device).unsqueeze(0) < counts.unsqueeze(1)
        texts = self.encoder.encode_text(captions[real]).float()
        self._texts.append((index.unsqueeze(1).expand_as(real)[real].cpu(), texts.cpu()))

    def gathered_embeddings(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image embeddings in index order, caption embeddings, the image of each caption),
        from every rank."""
        parts = gather_objects((self._images, self._texts))
        images = [pair for part in parts for pair in part[0]]
        texts = [pair for part in parts for pair in part[1]]
        index = torch.cat([i for i, _ in images])
        image_emb = torch.empty(len(index), images[0][1].shape[1])
        image_emb[index] = torch.cat([e for _, e in images])
        return image_emb, torch.cat([e for _, e in texts]), torch.cat([i for i, _ in texts])

    def finish_eval(self) -> dict[str, float]:
        image_emb, text_emb, caption_image = self.gathered_embeddings()
        ks = tuple(self.cfg.task.recall_ks)
        return retrieval_scores(text_emb @ image_emb.T, caption_image, ks)

    # --- prediction -----------------------------------------------------------
    @torch.inference_mode()
    def predict(self, out_dir: Path) -> list[dict[str, Any]]:
        if self.cfg.query:
            return self.predict_query(str(self.cfg.query), out_dir)
        return self.predict_images(expand_inputs(self.cfg.input), out_dir)

    def predict_images(self, paths: list[Path], out_dir: Path) -> list[dict[str, Any]]:
        """What `input=` images alone predict (without query=)."""
        raise NotImplementedError

    def load_images(self, paths: list[Path]) -> torch.Tensor:
        size = self.input_size()
        return torch.stack([load_image(p, size, 3) for p in paths]).to(self.device)

    def gallery(self) -> tuple[torch.Tensor, list[str]]:
        """uint8 images and their names to retrieve from: input= files, else split= of the data set."""
        if self.cfg.input:
            paths = expand_inputs(self.cfg.input)
            return self.load_images(paths), [str(p) for p in paths]
        data = self.splits.captioned(self.cfg.split)
        if data.images is not None:
            return data.images.to(self.device), [f"{self.cfg.split}:{i}" for i in data.image_ids]
        return self.load_images(data.paths), [str(p) for p in data.paths]

    def embed_all(self, images: torch.Tensor) -> torch.Tensor:
        size = self.cfg.dataset.eval_batch_size
        return torch.cat([self.embed_images(images[i : i + size]) for i in range(0, len(images), size)])

    def predict_query(self, query: str, out_dir: Path) -> list[dict[str, Any]]:
        """The top task.top_k images of the gallery for sentence `query`, saved as a grid."""
        images, names = self.gallery()
        if not len(images):
            raise UserError("mode=predict: the gallery to search is empty; pass input= images or another split=.")
        scores = self.embed_all(images) @ self.embed_sentences([query])[0]
        top = scores.topk(min(self.cfg.task.top_k, len(names)))
        ranked = [{"image": names[i], "score": s} for s, i in zip(top.values.tolist(), top.indices.tolist())]
        grid = save_grid(images[top.indices].cpu(), out_dir / "query.png", cols=len(ranked)) if self.cfg.logger.images else None
        return [{"input": query, "prediction": ranked[0]["image"], "score": ranked[0]["score"], "top": ranked,
                 "grid": str(grid) if grid else None}]

    # --- checkpoint state -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.splits.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.splits.load_state_dict(state)
