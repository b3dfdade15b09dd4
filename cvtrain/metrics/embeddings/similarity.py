"""Word-similarity correlation on a WordSim353-style file, as gensim's
`KeyedVectors.evaluate_word_pairs(pairs, delimiter, restrict_vocab, case_insensitive,
dummy4unknown)` computes it.

Each line is "word1 DELIM word2 DELIM score" (tab by default); lines starting with '#'
are comments, and any line that does not split into exactly three fields with a numeric
score is skipped, as gensim skips it. Words are not stripped (gensim does not strip
them either). A pair with a word outside the first `restrict_vocab` rows is skipped
and counted; the model's score is the cosine of the two rows (each normalised in
float64 and rounded to float32, as gensim's unitvec), and the result is the Pearson
and Spearman correlation between the human scores and the cosines, plus the per cent
of pairs skipped as out-of-vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvtrain.errors import UserError

from .analogies import restricted_vocab
from .correlation import pearson, spearman
from .vectors import WordVectors


@dataclass
class SimilarityResult:
    pearson: float
    spearman: float
    pairs: int  # pairs scored (with dummy4unknown: including the out-of-vocabulary ones)
    oov: int  # pairs with an out-of-vocabulary word
    skipped_lines: int  # lines that are not 'word DELIM word DELIM number' (comments excluded)
    dummy4unknown: bool = False

    @property
    def oov_ratio(self) -> float:
        """Per cent of pairs with an out-of-vocabulary word. gensim divides by the pairs
        read, except with dummy4unknown, where it divides by `pairs` (which then already
        holds the unknown ones): kept, so the numbers agree with gensim's."""
        return self.oov / (self.pairs if self.dummy4unknown else self.pairs + self.oov) * 100  # gensim's order


def evaluate_word_pairs(vectors: WordVectors, path: str | Path, delimiter: str = "\t",
                        restrict_vocab: int | None = 300000, case_insensitive: bool = True,
                        dummy4unknown: bool = False) -> SimilarityResult:
    """Pearson and Spearman correlation of cosines with the human scores in `path`."""
    fold = str.upper if case_insensitive else str
    vocab = restricted_vocab(vectors, restrict_vocab, fold)
    human, model, oov, skipped = [], [], 0, 0
    for fields in _read_pairs(path, delimiter):
        try:
            a, b, score = (fold(field) for field in fields)
            score = float(score)
        except ValueError:
            skipped += 1
            continue
        if a not in vocab or b not in vocab:
            oov += 1
            if dummy4unknown:
                human.append(score)
                model.append(0.0)
            continue
        human.append(score)
        model.append(cosine(vectors.vectors[vocab[a]], vectors.vectors[vocab[b]]))
    if len(human) < 2:
        raise UserError(f"'{path}': {len(human)} scorable pairs ({oov} with out-of-vocabulary words, {skipped} "
                        "lines not 'word<TAB>word<TAB>score'); a correlation needs at least 2. Check the "
                        "delimiter, or raise --restrict.")
    return SimilarityResult(pearson(human, model), spearman(human, model), len(human), oov, skipped, dummy4unknown)


def _read_pairs(path: str | Path, delimiter: str):
    """Split lines of the file, comments left out (text mode: '\\r\\n' reads as '\\n')."""
    try:
        with open(path, encoding="utf-8") as file:
            for line in file:
                if line and not line.startswith("#"):
                    yield line.split(delimiter)
    except UnicodeDecodeError:
        raise UserError(f"'{path}' is not UTF-8 text; save the word pairs file as UTF-8.") from None


def cosine(u: np.ndarray, v: np.ndarray) -> np.float32:
    """gensim's similarity(): dot of the two float32 unit vectors, each normalised in float64."""
    return np.dot(_unit32(u), _unit32(v))


def _unit32(vector: np.ndarray) -> np.ndarray:
    wide = vector.astype(np.float64)
    length = np.sqrt(np.dot(wide, wide))
    return (wide * (1.0 / length)).astype(np.float32) if length > 0.0 else vector
