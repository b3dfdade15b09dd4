"""Word-vector scorers and files against gensim, the reference: the word2vec text and
binary formats byte for byte, 3CosAdd analogy accuracy question for question, word-pair
Pearson / Spearman; then `cvtrain-score analogies / similarity` and the ShapesWorld
analogy questions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_score_cli
from gensim.models import KeyedVectors
from scipy import stats

from cvtrain.data.shapesworld import ShapesWorldSpec, generate_sample
from cvtrain.data.shapesworld.analogies import analogy_pairs, analogy_questions, write_analogy_questions
from cvtrain.errors import UserError
from cvtrain.metrics.embeddings import (
    WordVectors,
    evaluate_analogies,
    evaluate_word_pairs,
    is_binary,
    read_questions,
    read_word2vec,
    write_word2vec,
)
from cvtrain.metrics.embeddings.correlation import average_ranks, pearson, spearman


def gensim_vectors(words: list[str], matrix: np.ndarray) -> KeyedVectors:
    kv = KeyedVectors(matrix.shape[1])
    kv.add_vectors(words, matrix)
    return kv


def random_words(n: int = 40, dim: int = 7, seed: int = 0) -> WordVectors:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(n - 4)] + ["café", "Paris", "paris", "x_y"]
    matrix = rng.normal(size=(n, dim)).astype(np.float32)
    matrix[3] *= np.float32(1e-7)  # values printed in scientific notation
    matrix[5, 0] = np.float32(1e30)
    return WordVectors(words, matrix)


# --- word2vec files -------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_files_match_gensims_byte_for_byte_both_ways(tmp_path, binary):
    ours = random_words()
    write_word2vec(ours, tmp_path / "ours", binary=binary)
    gensim_vectors(ours.words, ours.vectors).save_word2vec_format(str(tmp_path / "gensim"), binary=binary)
    assert (tmp_path / "ours").read_bytes() == (tmp_path / "gensim").read_bytes()

    theirs = KeyedVectors.load_word2vec_format(str(tmp_path / "ours"), binary=binary)
    assert theirs.index_to_key == ours.words
    assert np.array_equal(theirs.vectors, ours.vectors)
    back = read_word2vec(tmp_path / "gensim", binary=binary)
    assert back.words == ours.words and back.vectors.dtype == np.float32
    assert np.array_equal(back.vectors, ours.vectors)
    assert is_binary(tmp_path / "gensim") is binary
    assert np.array_equal(read_word2vec(tmp_path / "gensim").vectors, ours.vectors)  # detected


def test_text_values_parse_as_gensim_parses_them(tmp_path):
    # Hand-written values, not float32 round trips: each must round to gensim's float32.
    # No newline at the end: gensim reads the last line all the same.
    (tmp_path / "v.txt").write_text("3 3\na 0.1 -2.5e-3 1\nb 3.14159265358979 1e+20 -0\nc 7 .5 1E-45  ")
    theirs = KeyedVectors.load_word2vec_format(str(tmp_path / "v.txt"))
    ours = read_word2vec(tmp_path / "v.txt")
    assert ours.words == theirs.index_to_key == ["a", "b", "c"]
    assert np.array_equal(ours.vectors, theirs.vectors)


def test_c_tool_binary_newlines_repeated_words_and_extra_records(tmp_path):
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(4, 3)).astype("<f4")
    # The C tool ends each record with a newline; 'b' repeats; the 4th record is past COUNT.
    records = b"".join(w.encode() + b" " + row.tobytes() + b"\n" for w, row in zip("abbd", matrix))
    (tmp_path / "c.bin").write_bytes(b"3 3\n" + records)
    theirs = KeyedVectors.load_word2vec_format(str(tmp_path / "c.bin"), binary=True)
    ours = read_word2vec(tmp_path / "c.bin")
    # gensim 4.4 keeps the first 'b' too, but leaves a zero row keyed None where the copy was.
    assert ours.words == theirs.index_to_key[:2] == ["a", "b"] and theirs.index_to_key[2] is None
    assert np.array_equal(ours.vectors, theirs.vectors[:2]) and np.array_equal(ours.vectors, matrix[:2])


@pytest.mark.parametrize("content, message", [
    (b"", "header 'COUNT DIM'"),
    (b"two 3\na 1 2 3\n", "header 'COUNT DIM'"),
    (b"2 3\na 1 2 3\n", "ends after 1 of the 2 words"),
    (b"1 3\na 1 2\n", "line 2"),
])
def test_bad_files_are_user_errors_naming_the_file(tmp_path, content, message):
    (tmp_path / "bad.txt").write_bytes(content)
    with pytest.raises(UserError, match=message) as error:
        read_word2vec(tmp_path / "bad.txt")
    assert "bad.txt" in str(error.value) and "\n" not in str(error.value)


def test_writing_a_word_with_whitespace_is_refused(tmp_path):
    with pytest.raises(ValueError, match="whitespace"):
        write_word2vec(WordVectors(["new york"], np.zeros((1, 2))), tmp_path / "v.txt")


# --- analogies ----------------------------------------------------------------------------


def analogy_world(tmp_path) -> tuple[WordVectors, str]:
    """Vectors where most analogies hold (y_i = x_i + offset + noise, z_i = x_i + other
    offset + noise), with exact ties (a copy of an answer's row), case variants, and
    questions with unknown words, words beyond restrict_vocab, and lines gensim skips."""
    rng = np.random.default_rng(7)
    n, dim = 12, 6
    x = rng.normal(size=(n, dim))
    offset, other = rng.normal(size=dim) * 1.5, rng.normal(size=dim) * 1.5
    y = x + offset + rng.normal(size=(n, dim)) * 0.6
    z = x + other + rng.normal(size=(n, dim)) * 0.6
    words = [f"x{i}" for i in range(n)] + [f"y{i}" for i in range(n)] + [f"z{i}" for i in range(n)]
    matrix = np.concatenate([x, y, z])
    # Ties: 'twin' has y2's exact row, 'Y5' (folds to 'y5') y5's; 'Y6' differs from 'y6';
    # 'rare*' lie beyond restrict_vocab.
    words += ["twin", "Y5", "Y6", "X0", "rare0", "rare1"]
    matrix = np.concatenate([matrix, [y[2], y[5], rng.normal(size=dim), x[0]], rng.normal(size=(2, dim))])
    vectors = WordVectors(words, matrix)
    order = rng.permutation(len(words) - 2)  # file order = "frequency" order; rare* stay last
    vectors = WordVectors([words[i] for i in order] + words[-2:], vectors.vectors[np.r_[order, -2, -1]])
    lines = [": x-to-y"]
    lines += [f"x{i} y{i} x{j} y{j}" for i in range(n) for j in range(n) if i != j and (i + j) % 3 == 0]
    lines += ["x1 Y1 X2 y2", "x2 y2 x5 Y5", "x0 y0 x6 y6", "x3 y3 rare0 y4", "x3 y3 nowhere y4", "",
              "too few words", "a b c d e"]
    lines += [": empty-section", ": x-to-z"]
    lines += [f"x{i} z{i} x{j} z{j}" for i in range(n) for j in range(n) if i != j and (i * j) % 4 == 1]
    lines += ["X0 z0 x1 z1", "y1 x1 y2 x2", "y2 x2 twin x2"]
    path = tmp_path / "questions.txt"
    path.write_text("\n".join(lines) + "\n")
    return vectors, str(path)


@pytest.mark.parametrize("restrict, case_insensitive, dummy4unknown", [
    (300000, True, False),  # gensim's defaults
    (34, True, False),  # a vocabulary smaller than the file
    (34, False, False),
    (38, True, True),
    (None, False, True),
])
def test_analogies_equal_gensims_question_for_question(tmp_path, restrict, case_insensitive, dummy4unknown):
    vectors, questions = analogy_world(tmp_path)
    write_word2vec(vectors, tmp_path / "v.txt")
    kv = KeyedVectors.load_word2vec_format(str(tmp_path / "v.txt"))
    score, sections = kv.evaluate_word_analogies(questions, restrict_vocab=restrict,
                                                 case_insensitive=case_insensitive, dummy4unknown=dummy4unknown)
    ours = evaluate_analogies(read_word2vec(tmp_path / "v.txt"), read_questions(questions), restrict,
                              case_insensitive, dummy4unknown)
    assert ours.accuracy == score
    assert [s.name for s in ours.sections] == [s["section"] for s in sections]
    assert [s.name for s in ours.sections][-1] == "Total accuracy"
    for mine, theirs in zip(ours.sections, sections):
        assert (mine.correct, mine.incorrect) == (theirs["correct"], theirs["incorrect"]), mine.name
    total = ours.total
    assert 0 < len(total.correct) and 0 < len(total.incorrect)  # a test that can tell right from wrong
    assert ours.questions == 44 + 5 + 12 + 3 and ours.oov > 0
    answered = len(total.correct) + len(total.incorrect)
    assert answered == (ours.questions if dummy4unknown else ours.questions - ours.oov)


def test_analogy_ties_and_case_variants_resolve_as_in_gensim(tmp_path):
    # 'd', 'twin' and 'C' have the same row, the exact answer to 'a b c ?': their equal cosines
    # are ordered by numpy's argpartition and argsort, as in gensim; upper-cased, 'C' is the
    # question word 'c' and is passed over. 'A' has b's row: folded, it stands for 'a'.
    words = ["a", "b", "c", "d", "twin", "C", "A", "e"]
    base = np.eye(4, dtype=np.float32)
    matrix = np.stack([base[0], base[1], base[2], base[1] - base[0] + base[2], base[1] - base[0] + base[2],
                       base[1] - base[0] + base[2], base[1], base[3]])
    write_word2vec(WordVectors(words, matrix), tmp_path / "v.txt")
    (tmp_path / "q.txt").write_text(": ties\na b c d\na b c twin\na b c C\nA b c d\nb a d c\nc a b A\n")
    kv = KeyedVectors.load_word2vec_format(str(tmp_path / "v.txt"))
    for case_insensitive in (True, False):
        _, sections = kv.evaluate_word_analogies(str(tmp_path / "q.txt"), case_insensitive=case_insensitive)
        ours = evaluate_analogies(read_word2vec(tmp_path / "v.txt"), read_questions(tmp_path / "q.txt"),
                                  case_insensitive=case_insensitive)
        assert [(s.correct, s.incorrect) for s in ours.sections] == [
            (s["correct"], s["incorrect"]) for s in sections]


def test_question_before_a_section_is_a_user_error(tmp_path):
    (tmp_path / "q.txt").write_text("a b c d\n: late\n")
    with pytest.raises(UserError, match="line 1.*section header"):
        read_questions(tmp_path / "q.txt")


# --- word pairs -------------------------------------------------------------------------------


def pairs_world(tmp_path) -> tuple[str, str]:
    """Vectors (with an exact copy, so that two cosines tie) and a WordSim-style file with
    tied human scores, comments, a bad line, unknown and case-variant words."""
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(20)] + ["Tiger", "tiger", "copy"]
    matrix = rng.normal(size=(23, 5))
    matrix[22] = matrix[1]  # 'copy' == 'w1': cos(w0, copy) == cos(w0, w1)
    write_word2vec(WordVectors(words, matrix), tmp_path / "v.bin", binary=True)
    scores = rng.choice([1.0, 2.5, 2.5, 4.0, 7.25, 7.25, 9.0], size=30)
    lines = ["# Word 1\tWord 2\tHuman (mean)"]
    lines += [f"w{rng.integers(20)}\tw{rng.integers(20)}\t{s}" for s in scores]
    lines += ["w0\tw1\t5.0", "w0\tcopy\t5.0", "TIGER\tw3\t8", "tiger\tw4\t3", "w2\tlion\t6.5", "w3\tw4",
              "w5\tw6\tmany", "copy\tw9\t1.5"]
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n")
    return str(tmp_path / "v.bin"), str(path)


@pytest.mark.parametrize("restrict, case_insensitive, dummy4unknown", [
    (300000, True, False), (21, True, False), (300000, False, False), (21, True, True)])
def test_word_pairs_equal_gensims(tmp_path, restrict, case_insensitive, dummy4unknown):
    vectors, pairs = pairs_world(tmp_path)
    kv = KeyedVectors.load_word2vec_format(vectors, binary=True)
    pearson_, spearman_, oov = kv.evaluate_word_pairs(pairs, restrict_vocab=restrict, case_insensitive=case_insensitive,
                                                      dummy4unknown=dummy4unknown)
    ours = evaluate_word_pairs(read_word2vec(vectors), pairs, restrict_vocab=restrict,
                               case_insensitive=case_insensitive, dummy4unknown=dummy4unknown)
    assert ours.pearson == pytest.approx(pearson_.statistic, rel=1e-12, abs=1e-15)
    assert ours.spearman == pytest.approx(spearman_.statistic, rel=1e-12, abs=1e-15)
    assert ours.oov_ratio == oov and ours.oov > 0 and ours.skipped_lines == 2


def test_ranks_and_correlations_equal_scipys():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 6, size=50).astype(float)  # many ties
    y = x * 0.5 + rng.normal(size=50)
    assert np.array_equal(average_ranks(x), stats.rankdata(x))
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-12)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, rel=1e-12)
    assert np.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


# --- cvtrain-score ------------------------------------------------------------------------------


def test_cli_analogies_json_and_table(tmp_path, capsys):
    vectors, questions = analogy_world(tmp_path)
    write_word2vec(vectors, tmp_path / "v.bin", binary=True)
    kv = KeyedVectors.load_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    score, sections = kv.evaluate_word_analogies(questions, restrict_vocab=30)
    code, out, err = run_score_cli(["analogies", "--vectors", str(tmp_path / "v.bin"), "--questions", questions,
                                    "--restrict", "30", "--json"], capsys)
    assert code == 0 and "skipped 3 lines" in err
    scores = json.loads(out)
    assert scores["accuracy"] == score and scores["questions"] == 64
    assert [(s["section"], s["correct"], s["incorrect"]) for s in scores["sections"]] == [
        (s["section"], len(s["correct"]), len(s["incorrect"])) for s in sections]
    code, out, _ = run_score_cli(["analogies", "--vectors", str(tmp_path / "v.bin"), "--questions", questions,
                                  "--restrict", "30"], capsys)
    total = out.splitlines()[-2].split()
    assert code == 0 and total[:2] == ["Total", "accuracy"]
    assert float(total[-1].rstrip("%")) == pytest.approx(100 * score, abs=0.005)


def test_cli_similarity_json(tmp_path, capsys):
    vectors, pairs = pairs_world(tmp_path)
    pearson_, spearman_, oov = KeyedVectors.load_word2vec_format(vectors, binary=True).evaluate_word_pairs(pairs)
    code, out, _ = run_score_cli(["similarity", "--vectors", vectors, "--pairs", pairs, "--json"], capsys)
    scores = json.loads(out)
    assert code == 0
    assert scores["spearman"] == pytest.approx(spearman_.statistic, rel=1e-12)
    assert scores["pearson"] == pytest.approx(pearson_.statistic, rel=1e-12)
    assert scores["oov_ratio"] == oov


@pytest.mark.parametrize("flag", ["--vectors", "--questions"])
def test_cli_missing_file_is_one_line_exit_2(tmp_path, capsys, flag):
    vectors, questions = analogy_world(tmp_path)
    write_word2vec(vectors, tmp_path / "v.txt")
    paths = {"--vectors": str(tmp_path / "v.txt"), "--questions": questions, flag: str(tmp_path / "nope.txt")}
    code, out, err = run_score_cli(["analogies", *(x for kv in paths.items() for x in kv)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and flag in err and "nope.txt" in err and "does not exist" in err


def test_cli_bad_vectors_file_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "v.txt").write_text("hello world\n")
    (tmp_path / "p.tsv").write_text("a\tb\t1\n")
    code, out, err = run_score_cli(["similarity", "--vectors", str(tmp_path / "v.txt"), "--pairs",
                                    str(tmp_path / "p.tsv")], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "v.txt" in err and "COUNT DIM" in err


def test_cli_scores_vectors_without_importing_torch(tmp_path):
    vectors, pairs = pairs_world(tmp_path)
    code = ("import sys\nfrom cvtrain.score_cli import main\n"
            f"main(['similarity', '--vectors', {vectors!r}, '--pairs', {pairs!r}])\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert "spearman" in done.stdout


# --- ShapesWorld analogy questions -----------------------------------------------------------


def test_shapesworld_questions_are_fixed_and_parse(tmp_path):
    text = analogy_questions()
    assert text == analogy_questions()
    parsed = read_questions(write_analogy_questions(tmp_path / "q.txt"))
    assert [(s.name, len(s.questions)) for s in parsed.sections] == [
        ("size-to-large", 12), ("superlative", 2), ("superlative-to-adjective", 2), ("plural-nouns", 2),
        ("singular-nouns", 2)]
    assert parsed.skipped_lines == 0
    assert all(len(set(q)) == 4 for s in parsed.sections for q in s.questions)


def test_shapesworld_question_words_are_caption_words():
    vocabulary = set()
    for index in range(200):
        for caption in generate_sample(ShapesWorldSpec(), "train", index)["captions"]:
            vocabulary.update(caption.split())
    used = {w for pairs in analogy_pairs().values() for pair in pairs for w in pair}
    assert used <= vocabulary, sorted(used - vocabulary)


def test_shapesworld_questions_are_answered_by_synonym_clusters(tmp_path):
    """The premise of the sections: if the grammar's interchangeable words get (nearly)
    the same vector, 3CosAdd answers every question; while the left-out direction
    'large : small :: big : ?' is a toss-up between 'little' and 'medium'."""
    clusters = [("small", "little", "medium"), ("large", "big"), ("largest", "biggest"), ("shape", "object"),
                ("shapes", "objects"), ("red", "blue", "green"), ("circle", "square")]
    rng = np.random.default_rng(0)
    words, rows = [], []
    for cluster in clusters:
        centre = rng.normal(size=16)
        for word in cluster:
            words.append(word)
            rows.append(centre + rng.normal(size=16) * 0.05)
    vectors = WordVectors(words, np.array(rows))
    questions = read_questions(write_analogy_questions(tmp_path / "q.txt"))
    assert evaluate_analogies(vectors, questions).accuracy == 1.0
    (tmp_path / "reverse.txt").write_text(": large-to-size\nlarge small big little\nlarge small big medium\n")
    reverse = evaluate_analogies(vectors, read_questions(tmp_path / "reverse.txt"))
    assert len(reverse.total.correct) == 1  # one of the two answers, never both
