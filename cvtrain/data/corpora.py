"""Text corpora: lines of raw text, for language modeling (per split) and word2vec (all).

Language modeling tokenizes them (word or character level) and builds the vocabulary
from the training lines only, so validation perplexity is measured on unseen text.
word2vec learns from every line and scores on analogy and similarity files instead, so
its builders ignore the split.
"""

from __future__ import annotations

from pathlib import Path

from cvtrain.errors import UserError
from cvtrain.registry import DATASETS

FRACTIONS = {"train": (0.0, 0.9), "val": (0.9, 0.95), "test": (0.95, 1.0)}
ROOT_HELP = "pass dataset.root=PATH of a plain-text file or a folder of them"


@DATASETS.register("shapes", family="language_modeling")
def shapes_corpus(cfg, split: str) -> list[str]:
    """Every caption of the split's ShapesWorld scenes, one per line."""
    from cvtrain.data.shapes import load

    return load(cfg, split).text_corpus()


@DATASETS.register("shapes", family="word2vec")
def shapes_captions(cfg, split: str) -> list[str]:
    """The training scenes' captions: word2vec's default corpus, whatever the split."""
    return shapes_corpus(cfg, "train")


@DATASETS.register("text", family="language_modeling")
def text_file(cfg, split: str) -> list[str]:
    """The lines of plain text: the first 90 % train, then 5 % val, 5 % test."""
    lines = text_lines(cfg)
    if len(lines) < 20:
        raise UserError(f"dataset.root: '{cfg.root}' has {len(lines)} non-empty lines; a language model needs at least 20.")
    start, end = FRACTIONS[split]
    return lines[int(start * len(lines)) : int(end * len(lines))]


@DATASETS.register("text", family="word2vec")
def text_corpus(cfg, split: str) -> list[str]:
    """Every non-empty line of the file, or of the folder's files."""
    lines = text_lines(cfg)
    if not lines:
        raise UserError(f"dataset.root: '{cfg.root}' holds no text; {ROOT_HELP}.")
    return lines


@DATASETS.register("lee", family="word2vec")
def lee_corpus(cfg, split: str) -> list[str]:
    """gensim's Lee background corpus (300 news articles, one per line), as its tutorials use."""
    try:
        from gensim.test.utils import datapath
    except ImportError:
        raise UserError("dataset=lee is gensim's Lee corpus and needs gensim: pip install gensim, "
                        "or use dataset=text dataset.root=PATH.") from None
    return _read_lines(Path(datapath("lee_background.cor")))


def text_lines(cfg) -> list[str]:
    """The non-empty lines of dataset.root: one file, or every file below a folder (hidden
    ones left out) in sorted path order, so the corpus is the same on every machine."""
    if not cfg.root:
        raise UserError(f"dataset.root is required but not set; {ROOT_HELP}.")
    path = Path(str(cfg.root)).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
        if not files:
            raise UserError(f"dataset.root: the folder '{path}' has no files; {ROOT_HELP}.")
        return [line for file in files for line in _read_lines(file)]
    if not path.is_file():
        raise UserError(f"dataset.root: no such file or folder '{path}'; {ROOT_HELP}.")
    return _read_lines(path)


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise UserError(f"dataset.root: cannot read '{path}' ({error.strerror}); check the file's permissions.") from error
    return [line.strip() for line in text.splitlines() if line.strip()]
