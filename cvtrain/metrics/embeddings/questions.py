"""Reading an analogy test set in the questions-words format of word2vec's
`compute-accuracy` (and gensim's `evaluate_word_analogies`):

    : capital-common-countries
    Athens Greece Baghdad Iraq
    ...

A line starting with ': ' opens a section named by the rest of the line; every other
line is a question "a b c d" (a is to b as c is to d). Lines that are not four
whitespace-separated words (blank lines too) are skipped and counted, as gensim skips
them; a question before the first section header is an error, as in gensim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cvtrain.errors import UserError

Question = tuple[str, str, str, str]


@dataclass
class QuestionSection:
    name: str
    questions: list[Question] = field(default_factory=list)


@dataclass
class QuestionFile:
    sections: list[QuestionSection]
    skipped_lines: int  # lines neither a header nor four words

    @property
    def num_questions(self) -> int:
        return sum(len(section.questions) for section in self.sections)


def read_questions(path: str | Path) -> QuestionFile:
    """The sections of a questions-words file, words as written (case folding is the
    evaluator's choice)."""
    path = Path(path)
    sections: list[QuestionSection] = []
    skipped = 0
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            line = _decode(raw, path, number)
            if line.startswith(": "):
                # gensim strips the characters ':' and ' ' from the left, then whitespace.
                sections.append(QuestionSection(line.lstrip(": ").strip()))
            elif not sections:
                raise UserError(f"'{path}' line {number}: a question before the first section header; start the "
                                "file with a line such as ': capital-common-countries' (questions-words format).")
            elif len(words := line.split()) == 4:
                sections[-1].questions.append(tuple(words))
            else:
                skipped += 1
    return QuestionFile(sections, skipped)


def _decode(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"'{path}' line {number} is not UTF-8 text; save the questions file as UTF-8.") from None
