"""N-gram counts of tokenized captions, computed once and shared by BLEU and CIDEr.

pycocoevalcap counts every caption's 1..4-grams twice (in BLEU and in CIDEr) with a
Python loop per n-gram keyed by tuples of words, then looks each candidate n-gram up
in each reference, again once per scorer. Here:

- words become int ids and an n-gram one int: its words' ids in fixed-width bit
  fields, then its order in the low bits, computed for the whole corpus at once with
  numpy shifts (Python ints where a vocabulary is too large for 64 bits);
- each distinct caption is counted once, into one dict for all orders whose keys keep
  pycocoevalcap's iteration order (by order, then by first occurrence), so its
  floating-point sums can be reproduced term by term;
- `matches()` looks every candidate n-gram up in every reference of its image once,
  with C-level `map`s, and keeps the hits as flat arrays that BLEU (clipped counts)
  and CIDEr (clipped dot products) both reduce with numpy.
"""

from __future__ import annotations

import functools
import gc
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from itertools import chain, repeat
from typing import NamedTuple

import numpy as np

try:
    from collections import _count_elements  # the C loop behind Counter.update
except ImportError:  # pragma: no cover

    def _count_elements(counts: dict, items: Iterable) -> None:
        get = counts.get
        for item in items:
            counts[item] = get(item, 0) + 1


def without_gc(fn: Callable) -> Callable:
    """Run `fn` with the cyclic garbage collector paused.

    Scoring allocates tens of thousands of dicts and lists that all stay alive until
    the end; the collector would traverse them again and again for nothing (a third of
    the run time, and most of its jitter). Reference counting still frees everything.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not gc.isenabled():
            return fn(*args, **kwargs)
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.enable()

    return wrapper


class Matches(NamedTuple):
    """The candidates' n-grams and where they occur in their image's references.

    Candidate n-grams are listed image by image, each image's by order then first
    occurrence; hits are listed reference slot by slot, then in candidate order.
    """

    hyp_keys: list  # candidate n-grams (ints), image by image
    hyp_tf: np.ndarray  # their counts in the candidate
    hyp_image: np.ndarray  # their image
    hyp_order: np.ndarray  # their order minus one (0 for unigrams)
    hit_hyp: np.ndarray  # per hit: the index of the candidate n-gram
    hit_slot: np.ndarray  # per hit: the reference slot it occurs in
    hit_tf: np.ndarray  # per hit: its count in that reference (> 0)


class Corpus:
    """Captions counted once: for each image, its reference slots and its candidate.

    A reference slot is one (image, reference) pair; `slot_caption` and `hyp_caption`
    index the distinct captions, whose lengths and n-gram counts are kept.
    """

    @without_gc
    def __init__(self, gts: Mapping[Hashable, list[str]], res: Mapping[Hashable, list[str]], n: int = 4):
        check_pairs(gts, res)
        self.n = n
        index: dict[str, int] = {}
        slot_caption = [index.setdefault(c, len(index)) for key in gts for c in gts[key]]
        hyp_caption = [index.setdefault(res[key][0], len(index)) for key in gts]
        refs_per_image = [len(gts[key]) for key in gts]
        self.images = len(refs_per_image)
        self.refs_per_image = np.array(refs_per_image, dtype=np.int64)
        self.slot_image = np.repeat(np.arange(self.images), self.refs_per_image)
        self.slot_caption = np.array(slot_caption, dtype=np.int64)
        self.hyp_caption = np.array(hyp_caption, dtype=np.int64)
        self.lengths, self.counts = _count_captions(list(index), n)
        self._matches: Matches | None = None

    def orders(self, keys: list) -> np.ndarray:
        """The order (minus one) of each n-gram key."""
        mask = (1 << _order_bits(self.n)) - 1
        try:
            return (np.array(keys, dtype=np.uint64) & np.uint64(mask)).astype(np.int64)
        except OverflowError:  # keys beyond 64 bits (huge vocabulary)
            return np.array([key & mask for key in keys], dtype=np.int64)

    @without_gc
    def matches(self) -> Matches:
        """The candidates' n-grams and their counts in each reference of their image (cached)."""
        if self._matches is None:
            self._matches = self._find_matches()
        return self._matches

    def _find_matches(self) -> Matches:
        hyp_dicts = list(map(self.counts.__getitem__, self.hyp_caption.tolist()))
        hyp_len = np.fromiter(map(len, hyp_dicts), dtype=np.int64, count=self.images)
        hyp_keys = list(chain.from_iterable(hyp_dicts))
        hyp_tf = np.fromiter(chain.from_iterable(map(dict.values, hyp_dicts)), dtype=np.int64, count=len(hyp_keys))
        slot_len = hyp_len[self.slot_image]  # one lookup per candidate n-gram per reference
        ref_dicts = map(self.counts.__getitem__, self.slot_caption.tolist())
        looked_in = chain.from_iterable(map(repeat, ref_dicts, slot_len.tolist()))
        looked_up = chain.from_iterable(map(hyp_dicts.__getitem__, self.slot_image.tolist()))
        total = int(slot_len.sum())
        ref_tf = np.fromiter(map(dict.get, looked_in, looked_up, repeat(0)), dtype=np.int64, count=total)
        hits = np.flatnonzero(ref_tf)
        lookup_hyp = ragged_arange((np.cumsum(hyp_len) - hyp_len)[self.slot_image], slot_len)
        lookup_slot = np.repeat(np.arange(len(self.slot_image)), slot_len)
        return Matches(
            hyp_keys,
            hyp_tf,
            np.repeat(np.arange(self.images), hyp_len),
            self.orders(hyp_keys),
            lookup_hyp[hits],
            lookup_slot[hits],
            ref_tf[hits],
        )


def _order_bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


def _count_captions(captions: list[str], n: int) -> tuple[np.ndarray, list[dict]]:
    """Each caption's length in words and its n-gram counts (int keys, all orders in one dict)."""
    words = list(map(str.split, captions))
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    vocab = _Vocabulary()
    ids = np.fromiter(map(vocab.__getitem__, chain.from_iterable(words)), dtype=np.int64, count=int(lengths.sum()))
    bits, order_bits = max(1, len(vocab).bit_length()), _order_bits(n)
    if bits * n + order_bits <= 64:
        flat = _ngram_keys_numpy(ids.astype(np.uint64), bits, order_bits, lengths, n)
    else:  # too many distinct words for one uint64 per n-gram: exact Python ints instead
        flat = _ngram_keys_python(ids.tolist(), bits, order_bits, lengths.tolist(), n)
    sizes = (lengths[:, None] - np.arange(n)[None, :]).clip(min=0).sum(axis=1)
    return lengths, _count_slices(flat, np.cumsum(sizes) - sizes, sizes)


def _ngram_keys_numpy(ids: np.ndarray, bits: int, order_bits: int, lengths: np.ndarray, n: int) -> list[int]:
    """All captions' n-gram keys, caption by caption, each caption's by order then position."""
    per_order, codes = [], ids
    for k in range(n):
        if k:  # the (k+1)-gram at i = (the k-gram at i) << bits | word i+k, across captions; cut below
            codes = (codes[:-1] << np.uint64(bits)) | ids[k:]
        per_order.append((codes << np.uint64(order_bits)) | np.uint64(k))
    offsets = np.cumsum([0] + [len(c) for c in per_order[:-1]])
    starts = np.cumsum(lengths) - lengths
    piece_starts = (starts[:, None] + offsets[None, :]).ravel()
    piece_sizes = (lengths[:, None] - np.arange(n)[None, :]).clip(min=0).ravel()
    return np.concatenate(per_order)[ragged_arange(piece_starts, piece_sizes)].tolist()


def _ngram_keys_python(ids: list[int], bits: int, order_bits: int, lengths: list[int], n: int) -> list[int]:
    flat, start = [], 0
    for length in lengths:
        grams = ids[start : start + length]
        for k in range(n):
            if k:
                grams = [(g << bits) | w for g, w in zip(grams, ids[start + k : start + length])]
            flat += [(g << order_bits) | k for g in grams]
        start += length
    return flat


def _count_slices(flat: list, starts: np.ndarray, sizes: np.ndarray) -> list[dict]:
    """The counts of flat[start:start + size] for each slice, keys in order of first occurrence."""
    pieces = map(flat.__getitem__, map(slice, starts.tolist(), (starts + sizes).tolist()))
    counted: list[dict] = [{} for _ in range(len(sizes))]
    deque(map(_count_elements, counted, pieces), maxlen=0)  # C loops all the way
    return counted


class _Vocabulary(dict):
    """Word -> int id, handing out the next id to a new word."""

    def __missing__(self, word: str) -> int:
        self[word] = index = len(self)
        return index


def ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of arange(s, s + l) for each (s, l)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(np.asarray(starts, dtype=np.int64), lengths) + (np.arange(total, dtype=np.int64) - offsets)


def check_pairs(gts: Mapping, res: Mapping) -> None:
    """The checks of pycocoevalcap's scorers: same ids, one candidate and some references each."""
    if not gts:
        raise ValueError("no images to score")
    if gts.keys() != res.keys():
        missing = [k for k in gts if k not in res][:3]
        extra = [k for k in res if k not in gts][:3]
        raise ValueError(f"references and candidates differ in ids (no candidate: {missing}, no reference: {extra})")
    for key in gts:
        if not isinstance(res[key], list) or len(res[key]) != 1:
            raise ValueError(f"image {key!r}: expected a list of exactly one candidate caption")
        if not isinstance(gts[key], list) or not gts[key]:
            raise ValueError(f"image {key!r}: expected a non-empty list of reference captions")
