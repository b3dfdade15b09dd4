"""Word-analogy questions (questions-words format) that word vectors trained on
ShapesWorld captions can answer, for `cvtrain-score analogies`.

word2vec learns from contexts, and in this grammar most words of a kind are
interchangeable: any colour, any shape, any relation word and any background word can
fill the same slot with the same odds, independently of the rest of the sentence. Such
words get vectors that differ only by noise, so an analogy among them ("red : blue ::
green : ?", "circle : circles :: square : ?", "above : below :: left : ?") has no
learnable answer, and is left out. 3CosAdd answers a : b :: c : d when d is the only
word, besides the excluded b, that shares b's contexts; here that holds for:

- size-to-large: the main object is always large ("large"/"big", one size with two
  synonyms), the others small or medium ("small"/"little", "medium"), so the main-size
  words have contexts of their own ("a big circle with two smaller shapes");
- superlative and its reverse: "largest"/"biggest" appear only in "the largest shape
  is ...", "large"/"big" only before a colour or shape;
- plural-nouns and singular-nouns: "shape"/"object" follow "a", "red", "largest";
  "shapes"/"objects" follow a number.

The other direction of size-to-large is left out: "small"/"little"/"medium" are three
interchangeable words, so "large : small :: big : ?" is a coin toss between "little"
and "medium". Words pair with their own form ("large"/"largest", "big"/"biggest"),
although the vectors cannot tell those pairings from the crossed ones.
"""

from __future__ import annotations

from itertools import permutations, product
from pathlib import Path

from .language import SIZE_WORDS

Pair = tuple[str, str]

# The main object is always large (scene.py); the other objects are small or medium.
MAIN_SIZE_WORDS = SIZE_WORDS["large"]
OTHER_SIZE_WORDS = tuple(word for size, words in SIZE_WORDS.items() if size != "large" for word in words)
# language.py's superlatives ("the largest shape is ..."), paired with their adjectives.
SUPERLATIVES: tuple[Pair, ...] = (("large", "largest"), ("big", "biggest"))
# language.py's generic nouns, "shape" / "object", and their plurals.
NOUN_PLURALS: tuple[Pair, ...] = (("shape", "shapes"), ("object", "objects"))


def analogy_pairs() -> dict[str, tuple[Pair, ...]]:
    """Section name -> the word pairs (a, b) of its relation, in a fixed order."""
    return {
        "size-to-large": tuple(product(OTHER_SIZE_WORDS, MAIN_SIZE_WORDS)),
        "superlative": SUPERLATIVES,
        "superlative-to-adjective": tuple((b, a) for a, b in SUPERLATIVES),
        "plural-nouns": NOUN_PLURALS,
        "singular-nouns": tuple((b, a) for a, b in NOUN_PLURALS),
    }


def section_questions(pairs: tuple[Pair, ...]) -> list[tuple[str, str, str, str]]:
    """Every 'a b c d' from two pairs of the relation, as in word2vec's questions-words
    file, except those that repeat a word (the answer would be an excluded word)."""
    return [(a, b, c, d) for (a, b), (c, d) in permutations(pairs, 2) if len({a, b, c, d}) == 4]


def analogy_questions() -> str:
    """The whole questions-words file: ': section' lines, then 'a b c d' lines."""
    lines = []
    for name, pairs in analogy_pairs().items():
        lines.append(f": {name}")
        lines += [" ".join(question) for question in section_questions(pairs)]
    return "\n".join(lines) + "\n"


def write_analogy_questions(path: str | Path) -> Path:
    """Write the questions to `path` (for `cvtrain-score analogies --questions PATH`)."""
    path = Path(path)
    path.write_text(analogy_questions(), encoding="utf-8")
    return path
