"""Text to token ids and back: a regex tokenizer and a vocabulary that saves as plain data.

Nothing here downloads (no NLTK data, no pretrained tokenizers), so captioning and
language-model runs work offline. The vocabulary is saved inside checkpoints as a dict
of lists, strings and ints only, which `torch.load(weights_only=True)` accepts: a
checkpoint never needs to unpickle a Python object to be read back.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cvtrain.errors import UserError

LEVELS = ("word", "char")

# A word is a run of letters/digits (any script, so "café" stays one token), with an
# optional apostrophe suffix ("don't", "dog's"); any other non-space character is a
# token of its own, so punctuation never sticks to words.
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?|\S")


def tokenize(text: str, level: str = "word") -> list[str]:
    """Split `text` into tokens.

    word: lowercased words, numbers and single punctuation marks; whitespace is dropped.
    char: every character, spaces included and case kept: a character model should learn
    capitals and layout itself, and detokenize("".join) then restores the text exactly.
    """
    if level == "word":
        return _WORD.findall(text.lower())
    if level == "char":
        return list(text)
    raise UserError(f"unknown tokenizer level '{level}'. Valid: {', '.join(LEVELS)}.")


def detokenize(tokens: Iterable[str], level: str = "word") -> str:
    """Tokens back to text: words joined by spaces, characters joined by nothing.

    Word level is lossy (case and the spacing around punctuation are gone), which is
    what caption metrics and samples shown to a person need anyway.
    """
    if level not in LEVELS:
        raise UserError(f"unknown tokenizer level '{level}'. Valid: {', '.join(LEVELS)}.")
    return (" " if level == "word" else "").join(tokens)


class Vocabulary:
    """Token <-> id, with four special tokens at fixed ids.

    <pad>=0 (so zero-padded batches and `ignore_index=0` agree), <bos>=1, <eos>=2, and
    <unk>=3 for every token not kept. The id order is fully determined by the data
    (frequency, then alphabetical), so the same captions always give the same ids and
    a checkpoint's embedding rows keep their meaning.
    """

    PAD, BOS, EOS, UNK = 0, 1, 2, 3
    SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")

    def __init__(self, tokens: Sequence[str]):
        """`tokens`: the full id -> token list, starting with SPECIALS in order."""
        tokens = list(tokens)
        if tuple(tokens[: len(self.SPECIALS)]) != self.SPECIALS:
            raise ValueError(f"a vocabulary must start with {self.SPECIALS}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary must not hold a token twice")
        self.itos = tokens
        self.stoi = {token: i for i, token in enumerate(tokens)}

    @classmethod
    def build(
        cls, token_lists: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """The vocabulary of tokens seen at least `min_freq` times.

        `max_size` caps the total size, the four special tokens included, so it is the
        embedding's row count; the most frequent tokens are kept, ties broken
        alphabetically. Tokens spelled like a special token are not counted.
        """
        if min_freq < 1:
            raise UserError(f"vocabulary min_freq: must be at least 1, got {min_freq}.")
        if max_size is not None and max_size <= len(cls.SPECIALS):
            raise UserError(
                f"vocabulary max_size: must exceed the {len(cls.SPECIALS)} special tokens, got {max_size}."
            )
        counts = Counter(token for tokens in token_lists for token in tokens)
        kept = [(token, n) for token, n in counts.items() if n >= min_freq and token not in cls.SPECIALS]
        kept.sort(key=lambda item: (-item[1], item[0]))
        if max_size is not None:
            kept = kept[: max_size - len(cls.SPECIALS)]
        return cls([*cls.SPECIALS, *(token for token, _ in kept)])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"

    def encode(self, tokens: Iterable[str], add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids, <unk> for unknown tokens, optionally framed by <bos> ... <eos>."""
        ids = [self.stoi.get(token, self.UNK) for token in tokens]
        return [self.BOS] * add_bos + ids + [self.EOS] * add_eos

    def decode(self, ids: Iterable[Any], strip_special: bool = True) -> list[str]:
        """Tokens of `ids` (ints or 0-d tensors, e.g. a row of a generated batch).

        With `strip_special`, decoding stops at the first <eos> and drops <pad> and
        <bos>, which is what a generated, padded row needs; <unk> is kept, since it
        stands for a real word. Without it, every id is shown as is.
        """
        tokens = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.itos):
                raise ValueError(f"token id {i} is outside this vocabulary of {len(self.itos)} tokens")
            if strip_special and i == self.EOS:
                break
            if strip_special and i in (self.PAD, self.BOS):
                continue
            tokens.append(self.itos[i])
        return tokens

    def to_dict(self) -> dict[str, Any]:
        """Plain data (a list of str and an int) that `torch.load(weights_only=True)` reads."""
        return {"version": 1, "tokens": list(self.itos)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Vocabulary:
        """The vocabulary saved by `to_dict`; anything else is a UserError (a bad checkpoint)."""
        readable = isinstance(data, Mapping) and data.get("version") == 1
        tokens = data.get("tokens") if readable else None
        fix = "retrain, or pass the checkpoint this run saved."
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise UserError(f"checkpoint: its vocabulary is missing or unreadable; {fix}")
        try:
            return cls(tokens)
        except ValueError as err:
            raise UserError(f"checkpoint: its vocabulary is invalid ({err}); {fix}") from None
