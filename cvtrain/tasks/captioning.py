"""Image captioning: a CNN encoder and an RNN/GRU/LSTM decoder, scored as COCO scores.

Training uses teacher forcing on one of each image's reference captions, drawn anew at
every step. Evaluation decodes every image (greedy, or beam search with
decode.beam_size), gathers the captions from all ranks and scores them against all
references with the COCO caption evaluation's BLEU-1..4, METEOR, ROUGE-L and CIDEr-D.
`mode=predict input='photos/*.jpg'` prints one caption per image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from cvtrain.data.captions import CaptionedImages
from cvtrain.data.text import Vocabulary, detokenize
from cvtrain.engine.distributed import broadcast_object, env_from_os, gather_objects
from cvtrain.engine.task import Task
from cvtrain.models.decoding import beam_search, greedy
from cvtrain.registry import MODELS, TASKS
from cvtrain.tasks.captioned_data import CaptionedSplits
from cvtrain.tasks.figures import save_image_grid
from cvtrain.tasks.images import expand_inputs, load_image, normalize

REFERENCES_PER_IMAGE = 5  # each image's captions a training step draws from


@TASKS.register("captioning")
class CaptioningTask(Task):
    name = "captioning"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.splits = CaptionedSplits(cfg, "captioning", REFERENCES_PER_IMAGE)
        self._eval_split = "val"

    # --- data -----------------------------------------------------------------
    def captioned(self, split: str) -> CaptionedImages:
        return self.splits.captioned(split)

    def _vocabulary(self) -> Vocabulary:
        return self.splits.vocabulary()

    def build_dataset(self, split: str) -> Dataset:
        return self.splits.dataset(split)

    # --- model ----------------------------------------------------------------
    def build_models(self) -> dict[str, nn.Module]:
        """The captioner, assembled in models/ from the model config (see build_captioner)."""
        builder = MODELS.get("captioner", families=("captioner",))
        return {"model": builder(self.cfg.model, vocab_size=len(self._vocabulary()))}

    # --- training -------------------------------------------------------------
    def train_step(self, batch, step):
        captions = batch["captions"]
        pick = torch.randint(captions.shape[1], (captions.shape[0],), device=captions.device)
        tokens = captions[torch.arange(captions.shape[0], device=captions.device), pick]
        logits = self.model(normalize(batch["image"]), tokens[:, :-1])
        loss = nn.functional.cross_entropy(
            logits.float().flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=self._vocabulary().PAD
        )
        step("main", loss)
        return {"loss": loss.detach()}

    # --- evaluation -----------------------------------------------------------
    def generate(self, images: torch.Tensor) -> list[str]:
        """Captions for uint8 images, by greedy or beam search (decode.beam_size)."""
        vocab, dcfg = self._vocabulary(), self.cfg.decode
        state = self.model.init_state(normalize(images))
        args = dict(bos=vocab.BOS, eos=vocab.EOS, max_len=dcfg.max_len, state_batch_dim=1)
        if dcfg.beam_size > 1:
            ids = beam_search(self.model.step, state, beam_size=dcfg.beam_size,
                              length_penalty=dcfg.length_penalty, **args)
        else:
            ids = greedy(self.model.step, state, **args)
        return [detokenize(vocab.decode(row.tolist()), "word") for row in ids]

    def start_eval(self, split: str) -> None:
        self._eval_split = split
        self._generated: dict[int, str] = {}
        self._shown: list[tuple[torch.Tensor, str, str]] = []

    def eval_step(self, batch) -> None:
        captions = self.generate(batch["image"])
        for index, caption in zip(batch["index"].tolist(), captions):
            self._generated[index] = caption
        if len(self._shown) < self.cfg.logger.max_images:
            self._shown.extend(zip(batch["image"].cpu(), captions, batch["index"].tolist()))

    def finish_eval(self) -> dict[str, float]:
        from cvtrain.metrics.captioning import score_captions

        generated: dict[int, str] = {}
        for part in gather_objects(self._generated):
            generated.update(part)
        scores = None
        if env_from_os().is_main:
            refs = self._eval_references()
            scores = score_captions({i: refs[i] for i in generated}, {i: [c] for i, c in generated.items()},
                                    meteor="meteor" in self.cfg.task.metrics)  # METEOR starts a JVM: opt out
        return broadcast_object(scores)

    def _eval_references(self) -> list[list[str]]:
        return self.captioned(self._eval_split).references

    def save_outputs(self, out_dir: Path, tag: str) -> list[Path]:
        refs = self._eval_references()
        items = [(image, f"{caption}\n(ref: {refs[index][0]})") for image, caption, index in self._shown]
        return [save_image_grid(items[: self.cfg.logger.max_images], out_dir / "captions.png", cols=4, wrap=34)]

    # --- prediction -----------------------------------------------------------
    @torch.inference_mode()
    def predict(self, out_dir: Path) -> list[dict[str, Any]]:
        paths = expand_inputs(self.cfg.input)
        size, records, shown = self.cfg.dataset.image_size, [], []
        for start in range(0, len(paths), 64):
            chunk = paths[start : start + 64]
            images = torch.stack([load_image(p, size, 3) for p in chunk]).to(self.device)
            for path, image, caption in zip(chunk, images, self.generate(images)):
                records.append({"input": str(path), "prediction": caption})
                shown.append((image.cpu(), caption))
        if self.cfg.logger.images:
            save_image_grid(shown[: self.cfg.logger.max_images], out_dir / "captions.png", cols=4, wrap=34)
        return records

    # --- checkpoint state -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.splits.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.splits.load_state_dict(state)
