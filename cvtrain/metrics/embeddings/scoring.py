"""`cvtrain-score analogies` and `similarity`: check the paths the user gave, score,
and format the result as a table or as one JSON object.

The paths are checked here, where the flag that named them is known, so an error says
which option to fix; the readers' own errors name the file and the line.
"""

from __future__ import annotations

import math
from pathlib import Path

from cvtrain.errors import UserError

from .analogies import AnalogyResult, evaluate_analogies
from .questions import read_questions
from .similarity import SimilarityResult, evaluate_word_pairs
from .vectors import WordVectors
from .word2vec_format import read_word2vec


def existing_file(path: str, flag: str, what: str) -> Path:
    file = Path(path).expanduser()
    if not file.exists():
        raise UserError(f"{flag} '{path}' does not exist; give {what}.")
    if not file.is_file():
        raise UserError(f"{flag} '{path}' is not a file; give {what}.")
    return file


def load_vectors(path: str, binary: bool | None) -> WordVectors:
    file = existing_file(path, "--vectors", "a word2vec-format file (text or binary, with a 'COUNT DIM' header)")
    return read_word2vec(file, binary)


def check_restrict(restrict: int) -> int:
    if restrict < 1:
        raise UserError(f"--restrict must be a positive number of words, got {restrict}.")
    return restrict


def score_analogies(vectors: str, questions: str, restrict: int = 300000, binary: bool | None = None,
                    case_insensitive: bool = True) -> tuple[AnalogyResult, list[str]]:
    """(the result, notes for the user)."""
    check_restrict(restrict)
    file = existing_file(questions, "--questions", "an analogy file in questions-words format (': section', "
                                                   "then 'a b c d' lines)")
    words = load_vectors(vectors, binary)
    parsed = read_questions(file)
    if not parsed.num_questions:
        raise UserError(f"--questions '{questions}' holds no question lines 'a b c d' under a ': section' header.")
    result = evaluate_analogies(words, parsed, restrict, case_insensitive)
    notes = [f"skipped {parsed.skipped_lines} lines that are not four words"] if parsed.skipped_lines else []
    return result, notes


def analogy_json(result: AnalogyResult, restrict: int) -> dict:
    return {
        "accuracy": result.accuracy,
        "correct": len(result.total.correct),
        "answered": len(result.total.correct) + len(result.total.incorrect),
        "questions": result.questions,
        "oov": result.oov,
        "oov_ratio": result.oov_ratio,
        "restrict_vocab": restrict,
        "sections": [
            {"section": s.name, "correct": len(s.correct), "incorrect": len(s.incorrect), "accuracy": s.accuracy}
            for s in result.sections
        ],
    }


def analogy_lines(result: AnalogyResult) -> list[str]:
    """A table: one row per section, the total last, then what was skipped."""
    width = max(len("section"), *(len(s.name) for s in result.sections))
    lines = [f"{'section':{width}s}  correct  answered  accuracy"]
    for section in result.sections:
        answered = len(section.correct) + len(section.incorrect)
        lines.append(f"{section.name:{width}s}  {len(section.correct):7d}  {answered:8d}  "
                     f"{100 * section.accuracy:7.2f}%")
    lines.append(f"skipped {result.oov} of {result.questions} questions ({result.oov_ratio:.1f}%) with a word "
                 f"outside the first {result.considered} words of the vectors")
    return lines


def score_similarity(vectors: str, pairs: str, restrict: int = 300000, binary: bool | None = None,
                     case_insensitive: bool = True, delimiter: str = "\t") -> tuple[SimilarityResult, list[str]]:
    """(the result, notes for the user)."""
    check_restrict(restrict)
    file = existing_file(pairs, "--pairs", "a word pairs file in WordSim353 format ('word<TAB>word<TAB>score')")
    result = evaluate_word_pairs(load_vectors(vectors, binary), file, delimiter, restrict, case_insensitive)
    notes = [f"skipped {result.skipped_lines} lines that are not 'word, word, score'"] if result.skipped_lines else []
    return result, notes


def similarity_json(result: SimilarityResult) -> dict:
    """NaN (a constant column of scores or cosines) becomes null: JSON has no NaN."""
    return {"pearson": _number(result.pearson), "spearman": _number(result.spearman),
            "oov_ratio": result.oov_ratio, "pairs": result.pairs, "oov": result.oov}


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def similarity_lines(result: SimilarityResult) -> list[str]:
    return [
        f"{'pearson':9s} {result.pearson:.6f}",
        f"{'spearman':9s} {result.spearman:.6f}",
        f"{'pairs':9s} {result.pairs} scored, {result.oov} skipped ({result.oov_ratio:.1f}% with a word "
        "out of the vocabulary)",
    ]
