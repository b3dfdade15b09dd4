"""Language modeling: read one token at a time, keep a memory, predict what comes next.

The corpus (ShapesWorld captions or any text file) is tokenized at word or character
level, each line ends with <eos>, and the training stream is cut into windows of
`dataset.seq_len + 1` tokens; the model predicts tokens 1..T from tokens 0..T-1 of each
window, starting each window from a zero state. Evaluation reports perplexity (and bits
per character at character level) next to the unigram baseline's perplexity.
`mode=predict prompt="..."` continues a prompt by sampling (decode.temperature,
decode.top_k).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cvtrain.data.memory import InMemoryDataset
from cvtrain.data.text import Vocabulary, detokenize, tokenize
from cvtrain.engine.task import Task
from cvtrain.errors import UserError
from cvtrain.metrics.language import Perplexity, unigram_perplexity
from cvtrain.models.decoding import sample
from cvtrain.models.language_model import RecurrentLM
from cvtrain.registry import DATASETS, MODELS, TASKS

LEVELS = ("word", "char")


@TASKS.register("language_modeling")
class LanguageModelingTask(Task):
    name = "language_modeling"

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.dataset.level not in LEVELS:
            raise UserError(f"dataset.level={cfg.dataset.level} is not a level; use word or char.")
        self.level = cfg.dataset.level
        self.vocab: Vocabulary | None = None
        self._streams: dict[str, list[int]] = {}

    # --- data -----------------------------------------------------------------
    def _lines(self, split: str) -> list[list[str]]:
        builder = DATASETS.get(self.cfg.dataset.name, families=("language_modeling",))
        return [tokenize(line, self.level) for line in builder(self.cfg.dataset, split)]

    def _vocabulary(self) -> Vocabulary:
        if self.vocab is None:
            dcfg = self.cfg.dataset
            self.vocab = Vocabulary.build(self._lines("train"), min_freq=dcfg.min_freq, max_size=dcfg.max_vocab or None)
        return self.vocab

    def stream(self, split: str) -> list[int]:
        """The split as one id sequence, each line followed by <eos>."""
        if split not in self._streams:
            vocab = self._vocabulary()
            ids: list[int] = []
            for tokens in self._lines(split):
                ids.extend(vocab.encode(tokens, add_eos=True))
            self._streams[split] = ids
        return self._streams[split]

    def build_dataset(self, split: str) -> InMemoryDataset:
        ids = torch.tensor(self.stream(split), dtype=torch.long)
        window = self.cfg.dataset.seq_len
        count = (len(ids) - 1) // window
        if count < 1:
            raise UserError(f"the {split} text has {len(ids)} tokens, fewer than dataset.seq_len={window}; "
                            "lower dataset.seq_len or use more text.")
        starts = torch.arange(count) * window
        windows = ids[starts.unsqueeze(1) + torch.arange(window + 1)]
        return InMemoryDataset({"tokens": windows})

    # --- model ----------------------------------------------------------------
    def build_models(self) -> dict[str, nn.Module]:
        mcfg = self.cfg.model
        core = MODELS.get(mcfg.name, families=tuple(self.cfg.task.families))(mcfg, input_size=mcfg.embed_dim)
        model = RecurrentLM(len(self._vocabulary()), mcfg.embed_dim, core, mcfg.hidden_dim, mcfg.dropout)
        return {"model": model}

    def _nll(self, tokens: torch.Tensor, reduction: str) -> torch.Tensor:
        logits, _ = self.model(tokens[:, :-1])
        targets = tokens[:, 1:]
        return nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction=reduction)

    def train_step(self, batch, step):
        loss = self._nll(batch["tokens"], "mean")
        step("main", loss)
        return {"loss": loss.detach()}

    # --- evaluation -----------------------------------------------------------
    def start_eval(self, split: str) -> None:
        self.perplexity = Perplexity(char_level=self.level == "char", device=self.device)

    def eval_step(self, batch) -> None:
        tokens = batch["tokens"]
        self.perplexity.update(self._nll(tokens, "sum"), tokens[:, 1:].numel())

    def finish_eval(self) -> dict[str, float]:
        return {**self.perplexity.compute(), "unigram_ppl": self._unigram_baseline()}

    def _unigram_baseline(self) -> float:
        if not hasattr(self, "_unigram"):
            vocab_size = len(self._vocabulary())
            self._unigram = unigram_perplexity(self.stream("train"), self.stream("val"), vocab_size)
        return self._unigram

    # --- prediction -----------------------------------------------------------
    @torch.inference_mode()
    def predict(self, out_dir: Path) -> list[dict[str, Any]]:
        prompt = self.cfg.prompt
        if not prompt:
            raise UserError('mode=predict needs a prompt for this task: add prompt="A long time ago in a".')
        vocab, dcfg = self._vocabulary(), self.cfg.decode
        ids = [vocab.EOS, *vocab.encode(tokenize(prompt, self.level))]  # <eos>: a line starts here
        context = torch.tensor([ids], device=self.device)
        state = self.model(context[:, :-1])[1] if len(ids) > 1 else None  # an empty prompt: start afresh
        generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        continuation = sample(self.model.step, state, bos=ids[-1], eos=vocab.EOS, max_len=dcfg.max_len,
                              temperature=dcfg.temperature, top_k=dcfg.top_k, generator=generator,
                              batch_size=1, device=self.device)
        words = vocab.decode(continuation[0].tolist())
        text = detokenize(words, self.level)
        joiner = "" if self.level == "char" else " "
        return [{"input": prompt, "prediction": f"{prompt}{joiner}{text}".strip(), "continuation": text}]

    # --- checkpoint state -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"vocab": self._vocabulary().to_dict(), "level": self.level}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.vocab = Vocabulary.from_dict(state["vocab"])
            self.level = state["level"]
