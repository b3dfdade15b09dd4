"""Text corpora for language modeling: lines of raw text per split.

The task tokenizes them (word or character level) and builds the vocabulary from the
training lines only, so validation perplexity is measured on unseen text.
"""

from __future__ import annotations

from pathlib import Path

from cvtrain.errors import UserError
from cvtrain.registry import DATASETS

FRACTIONS = {"train": (0.0, 0.9), "val": (0.9, 0.95), "test": (0.95, 1.0)}


@DATASETS.register("shapes", family="language_modeling")
def shapes_corpus(cfg, split: str) -> list[str]:
    """Every caption of the split's ShapesWorld scenes, one per line."""
    from cvtrain.data.shapes import load

    return load(cfg, split).text_corpus()


@DATASETS.register("text", family="language_modeling")
def text_file(cfg, split: str) -> list[str]:
    """The lines of a plain-text file: the first 90 % train, then 5 % val, 5 % test."""
    if not cfg.root:
        raise UserError("dataset.root is required but not set; pass dataset.root=PATH of a plain-text file.")
    path = Path(str(cfg.root)).expanduser()
    if not path.is_file():
        raise UserError(f"dataset.root: no such file '{path}'; pass dataset.root=PATH of a plain-text file.")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError as error:
        raise UserError(f"dataset.root: cannot read '{path}' ({error.strerror}); check the file's permissions.") from error
    lines = [line for line in lines if line]
    if len(lines) < 20:
        raise UserError(f"dataset.root: '{path}' has {len(lines)} non-empty lines; a language model needs at least 20.")
    start, end = FRACTIONS[split]
    return lines[int(start * len(lines)) : int(end * len(lines))]
