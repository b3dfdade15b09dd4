"""Captioned images as the tasks that read them see them: a vocabulary and token tensors.

Captioning, retrieval and CLIP all train on images with several reference captions
each (ShapesWorld's five, COCO's five, a Karpathy split's). `CaptionedSplits` loads a
split through the data set's builder for the task's family, builds the vocabulary from
the training captions once, and turns each split into a data set of uint8 images,
their captions as token ids and their index, held in memory or read from files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from cvtrain.data.captions import CaptionedImages
from cvtrain.data.memory import InMemoryDataset
from cvtrain.data.text import Vocabulary, tokenize
from cvtrain.registry import DATASETS
from cvtrain.tasks.images import load_image

CAPTIONS_PER_IMAGE = 5


class CaptionedSplits:
    """The splits of `cfg.dataset` for task family `family`, and their vocabulary."""

    def __init__(self, cfg, family: str, per_image: int = CAPTIONS_PER_IMAGE):
        self.cfg, self.family, self.per_image = cfg, family, per_image
        self.vocab: Vocabulary | None = None
        self._data: dict[str, CaptionedImages] = {}

    def captioned(self, split: str) -> CaptionedImages:
        if split not in self._data:
            builder = DATASETS.get(self.cfg.dataset.name, families=(self.family,))
            self._data[split] = builder(self.cfg.dataset, split)
        return self._data[split]

    def vocabulary(self) -> Vocabulary:
        """Built from the training captions at first use, or restored from a checkpoint."""
        if self.vocab is None:
            lines = [tokenize(c) for refs in self.captioned("train").references for c in refs]
            dcfg = self.cfg.dataset
            self.vocab = Vocabulary.build(lines, min_freq=dcfg.min_freq, max_size=dcfg.max_vocab or None)
        return self.vocab

    def encode(self, sentences: list[str], max_len: int | None = None) -> torch.Tensor:
        """(N, L) token ids, <bos> sentence <eos> <pad>..., L = max_len (default
        dataset.max_caption_len) + 2; a longer sentence is cut, its <eos> kept."""
        vocab = self.vocabulary()
        length = (self.cfg.dataset.max_caption_len if max_len is None else max_len) + 2
        out = torch.full((len(sentences), length), vocab.PAD, dtype=torch.long)
        for i, sentence in enumerate(sentences):
            ids = vocab.encode(tokenize(sentence)[: length - 2], add_bos=True, add_eos=True)
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def encode_references(self, data: CaptionedImages) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, per_image, L) token ids and (N,) how many of each row's captions are real:
        an image with fewer captions repeats its own, so every row has `per_image` to draw
        from, and scorers that rank captions count each real one once."""
        counts = torch.tensor([min(len(refs), self.per_image) for refs in data.references], dtype=torch.long)
        flat = [refs[j % len(refs)] for refs in data.references for j in range(self.per_image)]
        tokens = self.encode(flat)
        return tokens.view(len(data), self.per_image, -1), counts

    def dataset(self, split: str) -> Dataset:
        """Images, captions (N, per_image, L), num_captions and index of split `split`."""
        data = self.captioned(split)
        captions, counts = self.encode_references(data)
        index = torch.arange(len(data))
        if data.images is not None:
            return InMemoryDataset({"image": data.images, "captions": captions, "num_captions": counts, "index": index})
        return CaptionedImageFiles(data.paths, captions, counts, self.cfg.dataset.image_size)

    def state_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocabulary().to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.vocab = Vocabulary.from_dict(state["vocab"])


class CaptionedImageFiles(Dataset):
    """Images read from files at `size` pixels, with their encoded captions."""

    def __init__(self, paths: list[Path], captions: torch.Tensor, counts: torch.Tensor, size: int):
        self.paths, self.captions, self.counts, self.size = paths, captions, counts, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": load_image(self.paths[i], self.size, 3), "captions": self.captions[i],
                "num_captions": self.counts[i], "index": torch.tensor(i)}


def draw_captions(captions: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """One of each image's real captions (B, L), drawn anew at every step."""
    pick = (torch.rand(captions.shape[0], device=captions.device) * counts).long()
    return captions[torch.arange(captions.shape[0], device=captions.device), pick]
