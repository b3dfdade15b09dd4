"""VQA data as the task reads it: question tokens and answer-class ids, grouped by image.

The answer classes are the task.num_answers most frequent answers of the training
split, counted over all ten annotators after the official evaluation's normalisation
(what the scorer compares a prediction as), so each class string scores as itself.
Each image row holds its questions padded to the split's largest count: tokens
(Q, L), the ten answers' class ids (Q, 10; -1: not a class) and the question ids
(-1: padding), which index the raw answers the scorer reads.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from cvtrain.data.memory import InMemoryDataset
from cvtrain.data.text import Vocabulary, tokenize
from cvtrain.data.vqa import VQAImages
from cvtrain.errors import UserError
from cvtrain.metrics.vqa import ANSWERS_PER_QUESTION, normalize_answer
from cvtrain.registry import DATASETS
from cvtrain.tasks.images import load_image


class VQASplits:
    """The splits of cfg.dataset for the vqa task, their question vocabulary and answer classes."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.vocab: Vocabulary | None = None
        self.answers: list[str] | None = None
        self._data: dict[str, VQAImages] = {}

    def images(self, split: str) -> VQAImages:
        if split not in self._data:
            builder = DATASETS.get(self.cfg.dataset.name, families=("vqa",))
            self._data[split] = builder(self.cfg.dataset, split)
        return self._data[split]

    def vocabulary(self) -> Vocabulary:
        if self.vocab is None:
            lines = [tokenize(q["question"]) for qs in self.images("train").questions for q in qs]
            self.vocab = Vocabulary.build(lines)
        return self.vocab

    def answer_classes(self) -> list[str]:
        """The K most frequent normalised training answers, most frequent first."""
        if self.answers is None:
            counts = Counter(normalize_answer(a["answer"]) for qs in self.images("train").questions
                             for q in qs for a in q["answers"])
            ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
            self.answers = [a for a, _ in ranked[: self.cfg.task.num_answers]]
            if not self.answers:
                raise UserError("the training split has no answer; check the VQA annotations.")
        return self.answers

    def encode_questions(self, texts: list[str]) -> torch.Tensor:
        """(N, L) token ids, L = task.max_question_len, zero-padded, a longer question cut."""
        vocab, length = self.vocabulary(), self.cfg.task.max_question_len
        out = torch.full((len(texts), length), vocab.PAD, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = vocab.encode(tokenize(text)[:length]) or [vocab.UNK]
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def encode(self, data: VQAImages) -> dict[str, torch.Tensor]:
        """Per image: tokens (N, Q, L), answers (N, Q, 10) class ids, question_id (N, Q)."""
        index = {a: i for i, a in enumerate(self.answer_classes())}
        most = max((len(qs) for qs in data.questions), default=1) or 1
        n, length = len(data), self.cfg.task.max_question_len
        tokens = torch.zeros(n, most, length, dtype=torch.long)
        answers = torch.full((n, most, ANSWERS_PER_QUESTION), -1, dtype=torch.long)
        qids = torch.full((n, most), -1, dtype=torch.long)
        for i, qs in enumerate(data.questions):
            if not qs:
                continue
            tokens[i, : len(qs)] = self.encode_questions([q["question"] for q in qs])
            for j, q in enumerate(qs):
                qids[i, j] = _int_id(q["question_id"])
                ids = [index.get(normalize_answer(a["answer"]), -1) for a in q["answers"][:ANSWERS_PER_QUESTION]]
                answers[i, j, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return {"tokens": tokens, "answers": answers, "question_id": qids}

    def dataset(self, split: str) -> Dataset:
        data = self.images(split)
        fields = self.encode(data)
        fields["index"] = torch.arange(len(data))
        if data.images is not None:
            return InMemoryDataset({"image": data.images, **fields})
        return ImageFilesWith(data.paths, fields, self.cfg.dataset.image_size)

    def state_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocabulary().to_dict(), "answers": list(self.answer_classes())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.vocab = Vocabulary.from_dict(state["vocab"])
            self.answers = [str(a) for a in state["answers"]]


def _int_id(qid: Any) -> int:
    try:
        return int(qid)
    except (TypeError, ValueError):
        raise UserError(f"question_id {qid!r} is not an integer; VQA question ids are integers.") from None


class ImageFilesWith(Dataset):
    """Images read from files at `size` pixels, with rows of other tensors."""

    def __init__(self, paths: list[Path], fields: dict[str, torch.Tensor], size: int):
        self.paths, self.fields, self.size = paths, fields, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": load_image(self.paths[i], self.size, 3), **{k: v[i] for k, v in self.fields.items()}}


def soft_targets(answers: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(M, K) VQA soft scores min(#annotators who gave class k / 3, 1) from (M, 10) class
    ids (-1: an answer outside the classes)."""
    known = answers >= 0
    counts = torch.zeros(answers.shape[0], num_classes + 1, device=answers.device)
    counts.scatter_add_(1, torch.where(known, answers, num_classes), known.float())
    return (counts[:, :num_classes] / 3).clamp(max=1.0)
