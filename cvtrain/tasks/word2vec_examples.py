"""word2vec's training examples for a whole batch of corpus chunks at once, as tensor ops.

word2vec.c and gensim walk the corpus word by word in C. Here each step of that walk is
one operation over every word of the batch: sub-sampling drops frequent words (gensim's
keep probability), each remaining word draws its window in 1..window, context positions
come from one (words, 2 * window) grid of offsets masked by window and sentence, and
negatives are drawn for every example at once from the unigram^0.75 table. An example
remembers the chunk it came from: each chunk is one SGD update, so the task can walk the
updates in order while the expensive part was done once for the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cvtrain.tasks.word2vec_huffman import HuffmanTree


def keep_probabilities(counts: torch.Tensor, sample: float) -> torch.Tensor:
    """gensim's probability of keeping each occurrence of a word counted `counts`:
    (sqrt(c / t) + 1) * t / c with t = sample * (total count), at most 1; 1 when
    sample is 0 (no sub-sampling). Words of count 0 (never seen) are kept."""
    counts = counts.double()
    if sample <= 0:
        return torch.ones_like(counts)
    threshold = sample * counts.sum() if sample < 1.0 else torch.tensor(float(sample), dtype=torch.float64)
    seen = counts.clamp(min=1)
    return ((seen / threshold).sqrt() + 1).mul(threshold / seen).clamp(max=1.0).where(counts > 0, 1.0)


def noise_distribution(counts: torch.Tensor, exponent: float = 0.75) -> torch.Tensor:
    """The noise words' probabilities: counts to the power `exponent`, normalised."""
    weights = counts.double().pow(exponent).where(counts > 0, 0.0)
    return weights / weights.sum()


def unigram_table(probabilities: torch.Tensor, per_word: int = 64, smallest: int = 1 << 16) -> torch.Tensor:
    """word2vec.c's table of noise words: entry i is the word whose cumulative
    probability first reaches (i + 0.5) / size, so each word fills its share of the table
    to within one entry, and a draw is one random index (a binary search per draw, or
    torch.multinomial, costs several times more). int32: the table stays in cache."""
    size = max(smallest, per_word * len(probabilities))
    cumulative = torch.cumsum(probabilities.double(), 0)
    points = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    return torch.searchsorted(cumulative, points).clamp(max=len(probabilities) - 1).int()


@dataclass
class Targets:
    """The output rows one objective scores for each example: (n, c) rows, their (n, c)
    labels (1: the true word or branch, 0: noise) and weights (0: padding, or a noise
    word that is the true word, which word2vec skips)."""

    rows: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor


@dataclass
class Examples:
    """n examples in chunk order. Skip-gram: `inputs` (n,) context words. CBOW: the
    context words of every bag in `context`, bag i from `offsets[i]`. `chunks` (n,) is
    each example's chunk; `targets` per objective ("negative", "hs")."""

    chunks: torch.Tensor
    targets: dict[str, Targets]
    inputs: torch.Tensor | None = None
    context: torch.Tensor | None = None
    offsets: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.chunks)

    def to_batch(self) -> dict[str, torch.Tensor]:
        """Plain named tensors, as a batch travels (from a loader worker, to a device)."""
        fields = {key: getattr(self, key) for key in ("chunks", "inputs", "context", "offsets")}
        batch = {key: value for key, value in fields.items() if value is not None}
        for name, t in self.targets.items():
            batch.update({f"{name}.rows": t.rows, f"{name}.labels": t.labels, f"{name}.weights": t.weights})
        return batch

    @classmethod
    def from_batch(cls, batch: dict[str, torch.Tensor]) -> Examples:
        names = [key.removesuffix(".rows") for key in batch if key.endswith(".rows")]
        targets = {name: Targets(batch[f"{name}.rows"], batch[f"{name}.labels"], batch[f"{name}.weights"])
                   for name in names}
        return cls(batch["chunks"], targets, inputs=batch.get("inputs"), context=batch.get("context"),
                   offsets=batch.get("offsets"))

    def bounds(self, chunks: int) -> list[int]:
        """Where each chunk's examples start, and the end: examples are in chunk order."""
        sizes = torch.bincount(self.chunks, minlength=chunks)
        return [0, *torch.cumsum(sizes, 0).tolist()]

    def part(self, start: int, end: int) -> Examples:
        """Examples start..end-1 (one chunk's, from `bounds`)."""
        targets = {name: Targets(t.rows[start:end], t.labels[start:end], t.weights[start:end])
                   for name, t in self.targets.items()}
        if self.inputs is not None:
            return Examples(self.chunks[start:end], targets, inputs=self.inputs[start:end])
        first = int(self.offsets[start]) if start < len(self) else len(self.context)
        last = int(self.offsets[end]) if end < len(self) else len(self.context)
        return Examples(self.chunks[start:end], targets, context=self.context[first:last],
                        offsets=self.offsets[start:end] - first)


class ExampleSampler:
    """Examples of batches of chunks, for fixed word counts and model settings."""

    def __init__(self, counts: torch.Tensor, *, sample: float, window: int, negative: int,
                 tree: HuffmanTree | None = None, exponent: float = 0.75, first_word: int = 0):
        """`counts` per vocabulary row; rows before `first_word` are not words (the
        vocabulary's special tokens) and never drawn as noise."""
        self.keep = keep_probabilities(counts, sample).float()
        self.table = unigram_table(noise_distribution(counts, exponent))
        self.window, self.negative, self.tree, self.first_word = window, negative, tree, first_word
        self.offsets = torch.cat([torch.arange(-window, 0), torch.arange(1, window + 1)])
        self.distance = self.offsets.abs()

    def skipgram(self, tokens: torch.Tensor, sentences: torch.Tensor) -> Examples:
        """One example per (word, context word) pair: the context word's input vector
        predicts the word, as in word2vec.c and gensim."""
        words, chunks, sentence = self._kept(tokens, sentences)
        position = self._windows(sentence)
        valid = position >= 0
        centre = valid.nonzero()[:, 0]  # row-major: examples stay in corpus (and chunk) order
        context = position.masked_select(valid)
        return Examples(chunks.index_select(0, centre), self._targets(words.index_select(0, centre)),
                        inputs=words.index_select(0, context))

    def cbow(self, tokens: torch.Tensor, sentences: torch.Tensor) -> Examples:
        """One example per word with at least one context word: the bag of its context
        words predicts it."""
        words, chunks, sentence = self._kept(tokens, sentences)
        position = self._windows(sentence)
        valid = position >= 0
        sizes = valid.sum(1)
        centre = (sizes > 0).nonzero()[:, 0]
        sizes = sizes.index_select(0, centre)
        context = words.index_select(0, position.masked_select(valid))
        return Examples(chunks.index_select(0, centre), self._targets(words.index_select(0, centre)),
                        context=context, offsets=torch.cumsum(sizes, 0) - sizes)

    def _kept(self, tokens: torch.Tensor, sentences: torch.Tensor):
        """Word ids, chunk indices and sentence ids of the words sub-sampling keeps, in
        corpus order; padding (id < 0) is never kept. (index_select, not fancy indexing:
        several times faster on these long index vectors.)"""
        words = tokens.flatten().long()
        keep = self.keep.index_select(0, words.clamp(min=0)).where(words >= 0, -1.0)
        where = (torch.rand(len(words)) < keep).nonzero().squeeze(1)
        return (words.index_select(0, where), torch.div(where, tokens.shape[1], rounding_mode="floor"),
                sentences.flatten().index_select(0, where))

    def _windows(self, sentence: torch.Tensor) -> torch.Tensor:
        """(n, 2 * window) context positions of each of n words, -1 where the offset lies
        beyond the word's drawn window or outside its sentence."""
        count = len(sentence)
        drawn = torch.randint(1, self.window + 1, (count, 1))
        position = torch.arange(count).unsqueeze(1) + self.offsets
        inside = (position >= 0) & (position < count) & (self.distance <= drawn)
        neighbour = sentence.index_select(0, position.clamp(0, max(count - 1, 0)).flatten()).view_as(position)
        return position.where(inside & (neighbour == sentence.unsqueeze(1)), -1)

    def _targets(self, words: torch.Tensor) -> dict[str, Targets]:
        targets = {}
        if self.negative:
            targets["negative"] = self._negative(words)
        if self.tree is not None:
            targets["hs"] = self._hierarchical(words)
        return targets

    def _negative(self, words: torch.Tensor) -> Targets:
        """The word (label 1) and `negative` noise words (label 0); a noise word equal to
        the word is skipped (weight 0), as word2vec does."""
        count = len(words)
        drawn = torch.randint(0, len(self.table), (count * self.negative,))
        noise = self.table.index_select(0, drawn).view(count, self.negative).long()
        rows = torch.cat([words.unsqueeze(1), noise], 1)
        labels = torch.zeros(rows.shape)
        labels[:, 0] = 1.0
        weights = torch.cat([torch.ones(count, 1), (noise != words.unsqueeze(1)).float()], 1)
        return Targets(rows, labels, weights)

    def _hierarchical(self, words: torch.Tensor) -> Targets:
        """The inner nodes on the word's path, each labelled 1 - code (word2vec.c's g)."""
        leaf, tree = words - self.first_word, self.tree
        depth = torch.arange(tree.points.shape[1])
        weights = (depth < tree.lengths.index_select(0, leaf).unsqueeze(1)).float()
        return Targets(tree.points.index_select(0, leaf), 1.0 - tree.codes.index_select(0, leaf).float(), weights)
