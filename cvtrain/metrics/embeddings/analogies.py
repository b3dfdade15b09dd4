"""Analogy accuracy by 3CosAdd, question for question as gensim's
`KeyedVectors.evaluate_word_analogies(questions, restrict_vocab, case_insensitive,
dummy4unknown)` computes it, so results can be compared with published gensim numbers.

For "a b c d" the prediction is the word whose vector has the largest cosine with
unit(b) + unit(c) - unit(a), among the first `restrict_vocab` words of the file (the most
frequent ones), leaving out a, b and c. The steps, each as gensim does them, because
each one can change an answer:

- case_insensitive upper-cases the question words and the restricted vocabulary; where
  several rows fold to one word ('Paris', 'paris') the first row stands for it;
- a question with a word outside the restricted vocabulary is skipped and counted as
  out-of-vocabulary (or, with dummy4unknown, counted as wrong);
- the mean of the three unit vectors is taken in float64 and normalised back to float32,
  cosines are float32, and the 8 best candidates come from numpy's argpartition and then
  argsort, so exact ties are broken the way gensim breaks them;
- the three question rows are dropped from those candidates, the first 5 remaining are
  walked in order, and the first whose upper-cased form is not a question word is the
  prediction (a later row that folds to a question word, like 'PARIS' for 'paris', is
  passed over).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .questions import Question, QuestionFile
from .vectors import WordVectors

TOTAL = "Total accuracy"
GENSIM_TOPN = 5  # gensim asks most_similar for 5 words and walks them in order


@dataclass
class AnalogySection:
    name: str
    correct: list[Question] = field(default_factory=list)
    incorrect: list[Question] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        """Correct / answered; 0.0 for a section with no answered question, as gensim."""
        answered = len(self.correct) + len(self.incorrect)
        return len(self.correct) / answered if answered else 0.0


@dataclass
class AnalogyResult:
    """`sections`: the file's sections, then one named 'Total accuracy' (as gensim returns)."""

    sections: list[AnalogySection]
    questions: int  # four-word lines read
    oov: int  # questions with a word outside the restricted vocabulary
    considered: int  # rows of the vectors used: the first restrict_vocab, or all

    @property
    def total(self) -> AnalogySection:
        return self.sections[-1]

    @property
    def accuracy(self) -> float:
        return self.total.accuracy

    @property
    def oov_ratio(self) -> float:
        """Per cent of the questions that had an out-of-vocabulary word."""
        return self.oov / self.questions * 100 if self.questions else 0.0  # gensim's order of operations


def evaluate_analogies(vectors: WordVectors, questions: QuestionFile, restrict_vocab: int | None = 300000,
                       case_insensitive: bool = True, dummy4unknown: bool = False) -> AnalogyResult:
    """Per-section and total 3CosAdd accuracy, as gensim's evaluate_word_analogies."""
    fold = str.upper if case_insensitive else str
    vocab = restricted_vocab(vectors, restrict_vocab, fold)
    solver = CosAdd(vectors, restrict_vocab)
    sections, oov = [], 0
    for source in questions.sections:
        section = AnalogySection(source.name)
        for question in source.questions:
            a, b, c, expected = folded = tuple(fold(word) for word in question)
            if any(word not in vocab for word in folded):
                oov += 1
                if dummy4unknown:
                    section.incorrect.append(folded)
                continue
            ranked = solver.most_similar(vocab[b], vocab[c], vocab[a])
            predicted = _first_answer([fold(vectors.words[row]) for row in ranked], ignore={a, b, c})
            (section.correct if predicted == expected else section.incorrect).append(folded)
        sections.append(section)
    total = AnalogySection(TOTAL, [q for s in sections for q in s.correct], [q for s in sections for q in s.incorrect])
    considered = len(vectors.words[:restrict_vocab])
    return AnalogyResult(sections + [total], questions.num_questions, oov, considered)


def restricted_vocab(vectors: WordVectors, restrict_vocab: int | None, fold) -> dict[str, int]:
    """Folded word -> row, over the first `restrict_vocab` rows; the first row wins."""
    vocab: dict[str, int] = {}
    for row, word in enumerate(vectors.words[:restrict_vocab]):
        vocab.setdefault(fold(word), row)
    return vocab


def _first_answer(candidates: list[str], ignore: set[str]) -> str | None:
    """gensim's loop: the first candidate not a question word; if every one is, the last
    one examined stays the prediction (None when there are none)."""
    predicted = None
    for predicted in candidates:
        if predicted not in ignore:
            break
    return predicted


class CosAdd:
    """gensim's `most_similar(positive=[b, c], negative=[a], topn=5, restrict_vocab=N)`
    on rows, with its arithmetic, so that near-ties and exact ties resolve the same way."""

    def __init__(self, vectors: WordVectors, restrict_vocab: int | None) -> None:
        self.vectors = vectors.vectors
        self.norms = np.linalg.norm(self.vectors, axis=1)  # gensim's fill_norms, over every row
        end = restrict_vocab or len(vectors)
        self.candidates, self.candidate_norms = self.vectors[:end], self.norms[:end]

    def most_similar(self, b: int, c: int, a: int, topn: int = GENSIM_TOPN) -> list[int]:
        """Rows of the `topn` best answers to a : b :: c : ?, best first, without a, b, c."""
        query = self._mean([(b, 1.0), (c, 1.0), (a, -1.0)])
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero vector: NaN, as in gensim
            cosines = np.dot(self.candidates, query) / self.candidate_norms
        question_rows = {a, b, c}
        best = _top(cosines, topn + 3)  # gensim: topn + the number of question words
        return [int(row) for row in best if row not in question_rows][:topn]

    def _mean(self, weighted: list[tuple[int, float]]) -> np.ndarray:
        """gensim's get_mean_vector(pre_normalize=True, post_normalize=True): float64
        weights times float32 unit rows, summed into float32, divided in float64."""
        mean = np.zeros(self.vectors.shape[1], dtype=np.float32)
        total = 0.0
        for row, weight in weighted:
            mean += np.float64(weight) * (self.vectors[row] / self.norms[row])
            total += abs(weight)
        return _unit(mean / np.float64(total)).astype(np.float32)


def _unit(vector: np.ndarray) -> np.ndarray:
    """gensim's matutils.unitvec for a dense array: unchanged when its norm is 0."""
    length = np.sqrt(np.dot(vector, vector))
    return vector * (1.0 / length) if length > 0.0 else vector


def _top(values: np.ndarray, topn: int) -> np.ndarray:
    """gensim's matutils.argsort(values, topn, reverse=True), call for call."""
    negated = -values
    if topn >= negated.size:
        return np.argsort(negated)[:topn]
    best = np.argpartition(negated, topn)[:topn]
    return best.take(np.argsort(negated.take(best)))
