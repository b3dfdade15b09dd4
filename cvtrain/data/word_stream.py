"""A corpus as word2vec trains on it: counted words, and the text as fixed-size chunks.

Words seen fewer than min_count times are removed from the text before anything else,
as gensim and word2vec.c do, so windows span the words that remain. The vocabulary is
cvtrain's `Vocabulary` (the most frequent word first, the order word2vec files keep),
whose special tokens are rows no word maps to. The text is cut into chunks of
`chunk_words` words, each word with the index of its line, so a window never crosses
a line (a sentence) even when two chunks of one line meet in a batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import torch

from cvtrain.data.memory import InMemoryDataset
from cvtrain.data.text import Vocabulary, tokenize
from cvtrain.errors import UserError

PADDING = -1  # token id of the positions after the text's end, in the last chunk


def corpus_words(lines: Iterable[str], punctuation: bool = False) -> list[list[str]]:
    """Each line's lower-cased words (cvtrain's tokenizer); punctuation marks only with
    `punctuation`: as vectors they would mostly be noise."""
    tokens = (tokenize(line) for line in lines)
    if punctuation:
        return list(tokens)
    return [[word for word in words if word[0].isalnum()] for words in tokens]


def count_words(sentences: Sequence[Sequence[str]], min_count: int) -> tuple[Vocabulary, torch.Tensor]:
    """The vocabulary of words seen at least `min_count` times, most frequent first
    (ties alphabetically), and each row's count (0 for the special tokens)."""
    if min_count < 1:
        raise UserError(f"task.min_count must be at least 1, got {min_count}.")
    counts = Counter(word for words in sentences for word in words)
    kept = sorted((word for word, n in counts.items() if n >= min_count and word not in Vocabulary.SPECIALS),
                  key=lambda word: (-counts[word], word))
    if len(kept) < 2:
        raise UserError(f"the corpus has {len(kept)} word(s) seen at least task.min_count={min_count} times "
                        f"({sum(counts.values())} words in all); word2vec needs two or more: lower task.min_count "
                        "or use more text.")
    vocab = Vocabulary([*Vocabulary.SPECIALS, *kept])
    return vocab, torch.tensor([counts.get(word, 0) if i >= len(Vocabulary.SPECIALS) else 0
                                for i, word in enumerate(vocab.itos)])


def chunked_stream(sentences: Sequence[Sequence[str]], vocab: Vocabulary, chunk_words: int) -> InMemoryDataset:
    """The corpus's known words in order, cut into (chunks, chunk_words) int32 "tokens"
    and "sentence" (the line each word is on); the last chunk is padded with PADDING."""
    if chunk_words < 1:
        raise UserError(f"task.chunk_words must be at least 1, got {chunk_words}.")
    ids, lines = [], []
    for line, words in enumerate(sentences):
        known = [vocab.stoi[word] for word in words if word in vocab.stoi]
        ids += known
        lines += [line] * len(known)
    padding = -len(ids) % chunk_words
    tokens = torch.tensor(ids + [PADDING] * padding, dtype=torch.int32).view(-1, chunk_words)
    sentence = torch.tensor(lines + [PADDING] * padding, dtype=torch.int32).view(-1, chunk_words)
    return InMemoryDataset({"tokens": tokens, "sentence": sentence}, words=len(ids))
