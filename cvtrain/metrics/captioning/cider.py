"""CIDEr-D as pycocoevalcap's cider_scorer.py computes it.

Each caption becomes, per n-gram order 1..4, a TF-IDF vector: count x (log N - log df),
where N is the number of evaluated images and df the number of images whose
references contain the n-gram (so the IDF comes from the references being evaluated,
not from a fixed corpus; an n-gram no reference has gets log N). Per reference and
order, the similarity is sum(min(candidate, reference) x reference) / (|candidate|
|reference|) (the "-D" clipping), times the length penalty exp(-delta^2 / (2 sigma^2)),
sigma = 6, where delta is the difference of the two captions' lengths as
cider_scorer.py measures them: in bigrams (a quirk kept for comparable numbers). The
image score is 10 x the mean over orders of the similarities averaged over the
references; the corpus score is the mean over images.

The vectors are numpy arrays, but every sum adds the same terms in the same order as
cider_scorer.py (`np.bincount` accumulates in input order), so the scores are the
same floats.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from itertools import chain, repeat

import numpy as np

from cvtrain.metrics.captioning.ngrams import Corpus, _count_elements, without_gc

SIGMA = 6.0


def compute_cider(
    gts: Mapping[Hashable, list[str]], res: Mapping[Hashable, list[str]], n: int = 4, sigma: float = SIGMA
) -> tuple[float, list[float]]:
    """(CIDEr-D, per-image CIDEr-D), like pycocoevalcap's `Cider().compute_score(gts, res)`."""
    return cider_from_corpus(Corpus(gts, res, n), sigma)


@without_gc
def cider_from_corpus(corpus: Corpus, sigma: float = SIGMA) -> tuple[float, list[float]]:
    """Corpus and per-image CIDEr-D of counted captions."""
    n, images = corpus.n, corpus.images
    log_images = np.log(float(images))
    # The idf weight of an n-gram depends on its document frequency only: a table by df.
    weight_by_df = log_images - np.log(np.maximum(1.0, np.arange(images + 1, dtype=np.float64)))
    similarity = _similarities(corpus, _document_frequency(corpus), weight_by_df)
    similarity *= _length_penalties(corpus, sigma)[:, None]
    bins = (corpus.slot_image[:, None] * n + np.arange(n)[None, :]).ravel()
    per_order = _sum_by(bins, similarity.ravel(), images * n).reshape(images, n)  # over references, in order
    score = np.zeros(images)
    for k in range(n):
        score = score + per_order[:, k]
    score = score / n / corpus.refs_per_image * 10.0
    return float(np.mean(score)), score.tolist()


def _sum_by(index: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Sums of `weights` by `index`, each in input order (np.bincount, always float)."""
    return np.bincount(index, weights=weights, minlength=size).astype(np.float64, copy=False)


def _similarities(corpus: Corpus, df: dict, weight_by_df: np.ndarray) -> np.ndarray:
    """Per reference slot and order, the clipped cosine similarity of the tf-idf vectors."""
    n, matches = corpus.n, corpus.matches()
    hyp_df = np.fromiter(map(df.get, matches.hyp_keys, repeat(0)), dtype=np.int64, count=len(matches.hyp_keys))
    hyp_weight = weight_by_df[hyp_df]
    hyp_value = matches.hyp_tf * hyp_weight
    hyp_bins = matches.hyp_image * n + matches.hyp_order
    hyp_norm = np.sqrt(_sum_by(hyp_bins, hyp_value * hyp_value, corpus.images * n)).reshape(-1, n)
    ref_value = matches.hit_tf * hyp_weight[matches.hit_hyp]
    clipped = np.minimum(hyp_value[matches.hit_hyp], ref_value) * ref_value
    hit_bins = matches.hit_slot * n + matches.hyp_order[matches.hit_hyp]
    dot = _sum_by(hit_bins, clipped, len(corpus.slot_image) * n).reshape(-1, n)
    slot_hyp_norm = hyp_norm[corpus.slot_image]
    ref_norm = _reference_norms(corpus, df, weight_by_df)
    both = (slot_hyp_norm != 0) & (ref_norm != 0)
    dot[both] /= slot_hyp_norm[both] * ref_norm[both]
    return dot


def _document_frequency(corpus: Corpus) -> dict:
    """n-gram -> number of images whose references contain it."""
    df: dict = {}
    ref_grams = list(map(corpus.counts.__getitem__, corpus.slot_caption.tolist()))
    refs_per_image = corpus.refs_per_image.tolist()
    refs = refs_per_image[0] if refs_per_image else 0
    if refs_per_image.count(refs) == len(refs_per_image):  # as many references everywhere: C loops
        unions = map(set.union, repeat(set()), *[ref_grams[i::refs] for i in range(refs)])
        _count_elements(df, chain.from_iterable(unions))
        return df
    start = 0
    for refs in refs_per_image:
        _count_elements(df, set().union(*ref_grams[start : start + refs]))
        start += refs
    return df


def _reference_norms(corpus: Corpus, df: dict, weight_by_df: np.ndarray) -> np.ndarray:
    """Per reference slot and order, the norm of its tf-idf vector (computed per distinct caption)."""
    n = corpus.n
    captions, slot_index = np.unique(corpus.slot_caption, return_inverse=True)
    grams = list(map(corpus.counts.__getitem__, captions.tolist()))
    sizes = np.fromiter(map(len, grams), dtype=np.int64, count=len(grams))
    keys = list(chain.from_iterable(grams))
    gram_df = np.fromiter(map(df.__getitem__, keys), dtype=np.int64, count=len(keys))
    tf = np.fromiter(chain.from_iterable(map(dict.values, grams)), dtype=np.int64, count=len(keys))
    value = tf * weight_by_df[gram_df]
    bins = np.repeat(np.arange(len(grams)), sizes) * n + corpus.orders(keys)
    return np.sqrt(_sum_by(bins, value * value, len(grams) * n)).reshape(-1, n)[slot_index]


def _length_penalties(corpus: Corpus, sigma: float) -> np.ndarray:
    """Per reference slot, exp(-delta^2 / (2 sigma^2)), delta in bigrams (cider_scorer.py's `length`)."""
    bigrams = np.maximum(corpus.lengths - 1, 0) if corpus.n > 1 else np.zeros_like(corpus.lengths)
    delta = bigrams[corpus.hyp_caption][corpus.slot_image] - bigrams[corpus.slot_caption]
    table = {d: math.e ** (-(float(d) ** 2) / (2 * sigma**2)) for d in set(delta.tolist())}
    return np.array([table[d] for d in delta.tolist()], dtype=np.float64)
