"""Scorers of word vectors (word2vec): analogy accuracy by 3CosAdd and word-similarity
correlation, each as gensim's KeyedVectors computes it, and the word2vec file formats.

numpy only, no torch: `cvtrain-score analogies` and `similarity` start at once, and
vectors trained anywhere (gensim, the C tool, cvtrain) can be scored the same way.
"""

from __future__ import annotations

from .analogies import AnalogyResult, AnalogySection, evaluate_analogies
from .questions import QuestionFile, read_questions
from .similarity import SimilarityResult, evaluate_word_pairs
from .vectors import WordVectors
from .word2vec_format import is_binary, read_word2vec, write_word2vec

__all__ = [
    "AnalogyResult",
    "AnalogySection",
    "QuestionFile",
    "SimilarityResult",
    "WordVectors",
    "evaluate_analogies",
    "evaluate_word_pairs",
    "is_binary",
    "read_questions",
    "read_word2vec",
    "write_word2vec",
]
