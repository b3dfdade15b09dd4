"""Word vectors as the scorers need them: the words in file order, a word -> row index,
and one float32 matrix.

File order matters: word2vec tools write the most frequent word first, and the scorers
restrict their vocabulary to the first N rows (as gensim's `restrict_vocab` does), so
the order is kept exactly as read and never sorted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class WordVectors:
    """`words[i]` has the vector `vectors[i]`; `index[word]` is i.

    Words must be unique: a lookup by word could not say which row it means otherwise
    (the readers keep the first of repeated words, as gensim does).
    """

    def __init__(self, words: Sequence[str], vectors) -> None:
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(words):
            raise ValueError(f"need one row per word: {len(words)} words, vectors of shape {matrix.shape}")
        self.words = list(words)
        self.vectors = matrix
        self.index = {word: row for row, word in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("words must be unique")

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self.index[word]]

    def __repr__(self) -> str:
        return f"WordVectors({len(self)} words, {self.dim} dimensions)"
