"""ROUGE-L as pycocoevalcap's rouge.py computes it, with a bit-parallel LCS.

Per image: the longest common subsequence (LCS) of the candidate with each reference
gives precision LCS/len(candidate) and recall LCS/len(reference); the best precision
and the best recall (each over all references, possibly from different ones) combine
into F = (1 + b^2) P R / (R + b^2 P) with b = 1.2; the corpus score is the mean of F.
Captions are split on single spaces (`split(" ")`, as rouge.py does), so an empty
caption is one empty token.

pycocoevalcap fills a dynamic-programming table in Python; here the LCS length comes
from Hyyro's bit-vector algorithm: the candidate's token positions are bits of a
Python int, and each reference token updates the whole row with a few integer
operations. The lengths are exact, so the scores are the same.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np

from cvtrain.metrics.captioning.ngrams import check_pairs, without_gc

BETA = 1.2


@without_gc
def compute_rouge(gts: Mapping[Hashable, list[str]], res: Mapping[Hashable, list[str]]) -> tuple[float, list[float]]:
    """(mean ROUGE-L, per-image ROUGE-L), like pycocoevalcap's `Rouge().compute_score(gts, res)`."""
    check_pairs(gts, res)
    scores = [rouge_l(res[key][0], gts[key]) for key in gts]
    return float(np.mean(np.array(scores))), scores


def rouge_l(candidate: str, refs: list[str], beta: float = BETA) -> float:
    """ROUGE-L F-measure of one candidate against its references (rouge.py's calc_score)."""
    tokens = candidate.split(" ")
    positions: dict[str, int] = {}
    for i, token in enumerate(tokens):
        positions[token] = positions.get(token, 0) | (1 << i)
    prec_max = rec_max = 0.0
    for ref in refs:
        ref_tokens = ref.split(" ")
        lcs = lcs_length(positions, len(tokens), ref_tokens)
        prec_max = max(prec_max, lcs / float(len(tokens)))
        rec_max = max(rec_max, lcs / float(len(ref_tokens)))
    if prec_max != 0 and rec_max != 0:
        return ((1 + beta**2) * prec_max * rec_max) / float(rec_max + beta**2 * prec_max)
    return 0.0


def lcs_length(positions: dict[str, int], length: int, other: list[str]) -> int:
    """LCS length of a sequence (given as token -> bitmask of its positions) with `other`.

    Bit i of `row` is 0 where the LCS of the first i+1 tokens grows, so the LCS length is
    the number of zero bits among the low `length` bits (Hyyro 2004, Allison-Dix).
    """
    row = full = (1 << length) - 1
    for match in map(positions.get, other):
        if match:
            low = row & match
            row = (row + low) | (row - low)
    return length - (row & full).bit_count()
