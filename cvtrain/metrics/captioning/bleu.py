"""BLEU-1..4 as pycocoevalcap's bleu_scorer.py computes it (corpus level, "closest" length).

The corpus score divides the clipped n-gram matches summed over all images by the
candidate n-grams summed over all images (tiny=1e-15 on top, small=1e-9 below, so an
empty candidate scores 0 and never divides by zero), takes the geometric mean over
orders 1..k, and applies the brevity penalty exp(1 - r/c) to the summed lengths,
where r sums, per image, the reference length closest to the candidate's (the shorter
on ties). Per-image scores use the same formula on one image. The counts are
integers and the formula runs as in bleu_scorer.py, so the floats are the same.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

import numpy as np

from cvtrain.metrics.captioning.ngrams import Corpus, without_gc

TINY = 1e-15
SMALL = 1e-9


def compute_bleu(
    gts: Mapping[Hashable, list[str]], res: Mapping[Hashable, list[str]], n: int = 4
) -> tuple[list[float], list[list[float]]]:
    """(BLEU-1..n, per-image BLEU-1..n), like pycocoevalcap's `Bleu(n).compute_score(gts, res)`."""
    return bleu_from_corpus(Corpus(gts, res, n))


@without_gc
def bleu_from_corpus(corpus: Corpus) -> tuple[list[float], list[list[float]]]:
    """Corpus and per-image BLEU-1..n of counted captions."""
    n = corpus.n
    hyp_len = corpus.lengths[corpus.hyp_caption]
    ref_len = _closest_reference_lengths(corpus, hyp_len)
    correct = _clipped_matches(corpus)
    guess = np.maximum(0, hyp_len[:, None] - np.arange(n)[None, :])
    rows = zip(correct.tolist(), guess.tolist(), hyp_len.tolist(), ref_len.tolist())
    per_image = [_bleu(c, g, test, ref) for c, g, test, ref in rows]
    totals = _bleu(correct.sum(axis=0).tolist(), guess.sum(axis=0).tolist(), int(hyp_len.sum()), int(ref_len.sum()))
    return totals, [list(scores) for scores in zip(*per_image)]


def _closest_reference_lengths(corpus: Corpus, hyp_len: np.ndarray) -> np.ndarray:
    """Per image, the reference length closest to the candidate's, the shorter one on ties."""
    lengths = corpus.lengths[corpus.slot_caption]
    scale = int(lengths.max(initial=0)) + 1
    key = np.abs(lengths - hyp_len[corpus.slot_image]) * scale + lengths  # (distance, length) as one int
    first_slot = np.cumsum(corpus.refs_per_image) - corpus.refs_per_image
    return np.minimum.reduceat(key, first_slot) % scale


def _clipped_matches(corpus: Corpus) -> np.ndarray:
    """Per image and order, the candidate's n-grams counted at most as often as in any one reference."""
    matches = corpus.matches()
    most = np.zeros(len(matches.hyp_tf), dtype=np.int64)
    np.maximum.at(most, matches.hit_hyp, matches.hit_tf)
    clipped = np.minimum(matches.hyp_tf, most)
    bins = matches.hyp_image * corpus.n + matches.hyp_order
    sums = np.bincount(bins, weights=clipped, minlength=corpus.images * corpus.n)
    return sums.astype(np.int64).reshape(corpus.images, corpus.n)


def _bleu(correct: list[int], guess: list[int], test_len: int, ref_len: int) -> list[float]:
    """bleu_scorer.py's formula: cumulative precision products, k-th roots, brevity penalty."""
    scores, product = [], 1.0
    for k in range(len(correct)):
        product *= (float(correct[k]) + TINY) / (float(guess[k]) + SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + TINY) / (ref_len + SMALL)
    if ratio < 1:
        penalty = math.exp(1 - 1 / ratio)
        scores = [s * penalty for s in scores]
    return scores
