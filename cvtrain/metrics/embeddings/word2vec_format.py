"""The word2vec file formats, byte for byte as gensim's `KeyedVectors.save_word2vec_format`
writes them and as its `load_word2vec_format` reads them.

Both start with a text header line "COUNT DIM\\n". Then, per word, in frequency order:

- text:   `word v1 v2 ... vDIM\\n`, each value as `str()` of a numpy float32 (its
          shortest round-trip form), separated by single spaces;
- binary: `word `, then DIM little-endian float32 (4 * DIM bytes), and no newline:
          gensim 4 writes none; the C word2vec tool writes one, and the reader strips a
          newline in front of a word (as gensim does), so it reads both.

Matching gensim exactly means files move freely between cvtrain, gensim and the C tool.
The reader follows gensim where files are odd: only the first COUNT records are read
(anything after them is ignored), a repeated word keeps its first vector, and text
values are split on single spaces. The binary reader holds the file in memory, which
suits the vocabularies of a course; a 3-million-word file needs a few GB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cvtrain.errors import UserError

from .vectors import WordVectors

FIX = "write it with gensim's KeyedVectors.save_word2vec_format or cvtrain's write_word2vec"
LITTLE_FLOAT32 = np.dtype("<f4")
DETECT_BYTES = 1 << 20  # a text record longer than this is not worth telling apart


def write_word2vec(vectors: WordVectors, path: str | Path, binary: bool = False) -> None:
    """Write `vectors` in word2vec format, in their order (gensim's for loaded vectors)."""
    for word in vectors.words:
        _check_word(word)
    with open(path, "wb") as out:
        out.write(f"{len(vectors)} {vectors.dim}\n".encode())
        for word, row in zip(vectors.words, vectors.vectors):
            out.write(_binary_record(word, row) if binary else _text_record(word, row))


def _check_word(word: str) -> None:
    """A word with whitespace would be written, but read back as something else."""
    if not word or len(word.split()) != 1 or word.strip() != word:
        raise ValueError(f"a word in word2vec format must be non-empty without whitespace, got {word!r}")


def _text_record(word: str, row: np.ndarray) -> bytes:
    # str() of each float32 scalar, as gensim writes: its shortest round-trip decimal form.
    return f"{word} {' '.join(str(value) for value in row)}\n".encode()


def _binary_record(word: str, row: np.ndarray) -> bytes:
    return f"{word} ".encode() + row.astype(LITTLE_FLOAT32).tobytes()


def read_word2vec(path: str | Path, binary: bool | None = None) -> WordVectors:
    """The vectors in `path`; `binary=None` detects the format from the first record."""
    path = Path(path)
    if binary is None:
        binary = is_binary(path)
    with open(path, "rb") as file:
        count, dim = _read_header(file, path)
        read = _read_binary if binary else _read_text
        words, matrix = read(file, path, count, dim)
    return _first_of_repeated(words, matrix)


def is_binary(path: str | Path) -> bool:
    """Whether the word2vec file is binary: its first record is not a line of UTF-8 text
    holding a word and numbers. Raw float32 bytes do form such a line by chance, but
    only with one short number ('word 12' before a newline byte, about 1 in 6,000
    files), so a text line needs at least two numbers (DIM when DIM is 1). A wrong count
    of two or more numbers still reads as text, so that the text reader reports it."""
    with open(path, "rb") as file:
        count, dim = _read_header(file, Path(path))
        line = file.readline(DETECT_BYTES)
    if count == 0:
        return False
    try:
        values = line.rstrip().decode("utf-8").split(" ")[1:]
    except UnicodeDecodeError:
        return True
    return len(values) < min(dim, 2) or not all(_is_number(value) for value in values)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_header(file, path: Path) -> tuple[int, int]:
    line = file.readline(DETECT_BYTES)
    try:
        count, dim = (int(field) for field in line.decode("utf-8").split())
    except ValueError:
        raise UserError(
            f"'{path}' is not a word2vec file: its first line should be the header 'COUNT DIM', "
            f"got {line[:60]!r}; {FIX}."
        ) from None
    if count < 0 or dim < 1:
        raise UserError(f"'{path}': the header says {count} words of {dim} dimensions; {FIX}.")
    return count, dim


def _read_text(file, path: Path, count: int, dim: int) -> tuple[list[str], np.ndarray]:
    """Lines split on single spaces after stripping the line's end, as gensim does."""
    words, matrix = [], np.empty((count, dim), dtype=np.float32)
    for row in range(count):
        line = file.readline()
        if not line:
            raise _truncated(path, count, row)
        try:
            word, *values = line.rstrip().decode("utf-8").split(" ")
            # Parse as double, round to float32: what gensim's float32(text) does.
            numbers = [float(value) for value in values]
        except (UnicodeDecodeError, ValueError):
            raise UserError(f"'{path}' line {row + 2}: not a word and {dim} numbers; {FIX} "
                            "(a binary file? pass --binary).") from None
        if len(numbers) != dim:
            raise UserError(f"'{path}' line {row + 2}: {len(numbers)} numbers after '{word}', the header "
                            f"says {dim}; {FIX}.")
        words.append(word)
        matrix[row] = numbers
    return words, matrix


def _read_binary(file, path: Path, count: int, dim: int) -> tuple[list[str], np.ndarray]:
    """`word ` and 4 * dim bytes per record; a newline in front of a word (the C tool's
    record separator) is dropped, as gensim does."""
    data, size = file.read(), 4 * dim
    words, matrix, start = [], np.empty((count, dim), dtype=np.float32), 0
    for row in range(count):
        space = data.find(b" ", start)
        if space == -1 or len(data) - (space + 1) < size:
            raise _truncated(path, count, row)
        try:
            words.append(data[start:space].decode("utf-8").lstrip("\n"))
        except UnicodeDecodeError:
            raise UserError(f"'{path}': word {row + 1} is not UTF-8 text; {FIX} "
                            "(a text file? pass --text).") from None
        matrix[row] = np.frombuffer(data, dtype=LITTLE_FLOAT32, count=dim, offset=space + 1)
        start = space + 1 + size
    return words, matrix


def _truncated(path: Path, count: int, found: int) -> UserError:
    return UserError(f"'{path}' ends after {found} of the {count} words its header announces: the file is "
                     f"truncated or its header is wrong; {FIX}.")


def _first_of_repeated(words: list[str], matrix: np.ndarray) -> WordVectors:
    """Drop later copies of a repeated word, as gensim's reader does."""
    seen: dict[str, int] = {}
    for row, word in enumerate(words):
        seen.setdefault(word, row)
    if len(seen) == len(words):
        return WordVectors(words, matrix)
    rows = list(seen.values())
    return WordVectors(list(seen), matrix[rows])
