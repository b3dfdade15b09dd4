"""word2vec's two models: tables of vectors and the scores between their rows.

Both hold the input vectors (the word vectors users keep, `syn0` in word2vec.c) and one
output table per objective: `negative` (syn1neg, one row per word) for negative sampling
and `hs` (syn1, one row per inner node of the Huffman tree) for hierarchical softmax.
They start as word2vec.c and gensim start them: input rows uniform in
[-0.5/dim, 0.5/dim), output rows zero. A model only scores; which rows meet, with which
labels, is the task's business (tasks/word2vec_examples.py), and so is the update, which
the trainer makes with plain SGD.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cvtrain.errors import UserError
from cvtrain.registry import MODELS

Pairs = dict[str, tuple[torch.Tensor, torch.Tensor]]


class WordVectorModel(nn.Module):
    """The tables; `sparse` makes the gathered rows' gradients sparse (large vocabularies,
    where a dense gradient of the whole table per step would cost more than the step)."""

    def __init__(self, num_words: int, dim: int, negative: bool, hs_nodes: int, sparse: bool = False):
        super().__init__()
        if not negative and not hs_nodes:
            raise UserError("word2vec needs an objective: set model.negative > 0 or model.hs=true.")
        self.sparse = sparse
        self.input = nn.Parameter((torch.rand(num_words, dim) - 0.5) / dim)
        self.negative = nn.Parameter(torch.zeros(num_words, dim)) if negative else None
        self.hs = nn.Parameter(torch.zeros(hs_nodes, dim)) if hs_nodes else None

    def outputs(self) -> dict[str, nn.Parameter]:
        """The output tables by objective name ("negative", "hs")."""
        return {name: table for name, table in (("negative", self.negative), ("hs", self.hs)) if table is not None}

    def rows(self, ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, table, sparse=self.sparse)

    def scores(self, hidden: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """(n, c) scores of `hidden` (n, dim) against the rows `targets[name]` (n, c) of each table."""
        tables = self.outputs()
        return {name: torch.bmm(self.rows(ids, tables[name]), hidden.unsqueeze(2)).squeeze(2)
                for name, ids in targets.items()}


class SkipGram(WordVectorModel):
    """The input vector of a word scores the words around it."""

    def forward(self, inputs: torch.Tensor | None = None, targets: dict[str, torch.Tensor] | None = None):
        """With `inputs` (n,) word ids: their scores against `targets` rows (see `scores`).
        Without: every input row against every row of each output table, (V, rows): with
        a small vocabulary one matrix product scores a whole update's pairs at once."""
        if inputs is None:
            return {name: self.input @ table.T for name, table in self.outputs().items()}
        return self.scores(self.rows(inputs, self.input), targets)


class CBOW(WordVectorModel):
    """The mean (or sum) of the context's input vectors scores the word in the middle."""

    def __init__(self, *args, mean: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.mean = mean

    def forward(self, context: torch.Tensor, offsets: torch.Tensor, targets: dict[str, torch.Tensor]):
        """`context`: the context words of n bags, bag i from offsets[i]; scores as `scores`."""
        summed = F.embedding_bag(context, self.input, offsets, mode="sum", sparse=self.sparse)
        sizes = torch.diff(offsets, append=offsets.new_tensor([len(context)])).clamp(min=1).unsqueeze(1)
        return self.scores(self._hidden(summed, sizes), targets)

    def _hidden(self, summed: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """word2vec.c's (and gensim's) update, not the exact gradient: with the mean, each
        context word receives the whole error; with the sum, the error divided by the bag's
        size. The value is the mean (or sum); the gradient flows as through the other."""
        mean = summed / sizes
        if self.mean:
            return summed + (mean - summed).detach()
        return mean + (summed - mean).detach()


def _tables(cfg, num_words: int, hs_nodes: int, sparse: bool) -> dict:
    if cfg.negative < 0 or cfg.dim < 1 or cfg.window < 1:
        raise UserError(f"model: need dim >= 1, window >= 1 and negative >= 0; got dim={cfg.dim}, "
                        f"window={cfg.window}, negative={cfg.negative}.")
    return {"num_words": num_words, "dim": cfg.dim, "negative": cfg.negative > 0,
            "hs_nodes": hs_nodes if cfg.hs else 0, "sparse": sparse}


@MODELS.register("skipgram", family="word_vectors")
def skipgram(cfg, num_words: int, hs_nodes: int, sparse: bool = False) -> SkipGram:
    return SkipGram(**_tables(cfg, num_words, hs_nodes, sparse))


@MODELS.register("cbow", family="word_vectors")
def cbow(cfg, num_words: int, hs_nodes: int, sparse: bool = False) -> CBOW:
    return CBOW(**_tables(cfg, num_words, hs_nodes, sparse), mean=cfg.cbow_mean)
