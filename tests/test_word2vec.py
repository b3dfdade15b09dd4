"""task=word2vec: the corpus readers, word2vec's sampling as gensim and word2vec.c do it,
one update of each model, a model that learns, the files it writes, and its errors.

The scorers themselves are tested against gensim in test_word_vectors.py.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from conftest import cli_in_process, compose_cfg, run_cli

from cvtrain.data.corpora import lee_corpus, text_corpus, text_file
from cvtrain.data.word_stream import chunked_stream, corpus_words, count_words
from cvtrain.errors import UserError
from cvtrain.registry import DATASETS, TASKS
from cvtrain.tasks import word2vec as w2v
from cvtrain.tasks.word2vec_examples import ExampleSampler, keep_probabilities, noise_distribution, unigram_table
from cvtrain.tasks.word2vec_huffman import huffman_tree

QUICK = ["trainer.progress=none", "trainer.num_threads=1", "dataset.num_workers=0"]


def _topics_corpus(lines: int = 1500, seed: int = 0) -> str:
    """Two topics whose words never meet: a word's neighbours are its own topic's."""
    rng = np.random.default_rng(seed)
    topics = [[f"red{i}" for i in range(6)], [f"blue{i}" for i in range(6)]]
    return "\n".join(" ".join(rng.choice(topics[n % 2], 8)) for n in range(lines)) + "\n"


@pytest.fixture
def topics_file(tmp_path):
    path = tmp_path / "topics.txt"
    path.write_text(_topics_corpus())
    return path


# --- corpora ------------------------------------------------------------------
def test_a_text_file_and_a_folder_are_read_line_by_line(tmp_path):
    (tmp_path / "b.txt").write_text("Second file.\n\n")
    (tmp_path / "a.txt").write_text("The first line,\n  and the second  \n")
    (tmp_path / ".hidden").write_text("never read\n")
    cfg = compose_cfg(["task=word2vec", "dataset=text", f"dataset.root={tmp_path}"]).dataset
    assert text_corpus(cfg, "train") == ["The first line,", "and the second", "Second file."]
    assert corpus_words(text_corpus(cfg, "train")) == [["the", "first", "line"], ["and", "the", "second"],
                                                       ["second", "file"]]
    assert corpus_words(["a, b."], punctuation=True) == [["a", ",", "b", "."]]
    cfg.root = str(tmp_path / "a.txt")
    assert text_corpus(cfg, "train") == ["The first line,", "and the second"]


def test_language_modeling_reads_a_folder_too(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.txt").write_text("".join(f"line {i} {n}\n" for n in range(10)))
    cfg = compose_cfg(["task=language_modeling", "dataset=text", f"dataset.root={tmp_path}"]).dataset
    assert len(text_file(cfg, "train")) == 27 and text_file(cfg, "test") == ["line 2 8", "line 2 9"]


def test_a_missing_corpus_path_is_named(tmp_path):
    cfg = compose_cfg(["task=word2vec", "dataset=text", f"dataset.root={tmp_path / 'nope.txt'}"]).dataset
    with pytest.raises(UserError, match="no such file or folder .*nope.txt"):
        text_corpus(cfg, "train")
    (tmp_path / "empty").mkdir()
    cfg.root = str(tmp_path / "empty")
    with pytest.raises(UserError, match="has no files"):
        text_corpus(cfg, "train")


def test_shapesworld_captions_are_the_default_corpus():
    cfg = compose_cfg(["task=word2vec", "dataset.num_train=8"])
    assert cfg.dataset.name == "shapes" and cfg.model.name == "skipgram"
    lines = DATASETS.get("shapes", families=("word2vec",))(cfg.dataset, "val")
    assert len(lines) == 40 and all(isinstance(line, str) and line for line in lines)


def test_the_lee_corpus_comes_from_gensim_or_a_one_line_error(monkeypatch):
    pytest.importorskip("gensim")
    lines = lee_corpus(None, "train")
    assert len(lines) == 300 and "Hundreds of people" in lines[0]
    monkeypatch.setitem(sys.modules, "gensim.test.utils", None)
    with pytest.raises(UserError, match="dataset=lee is gensim's Lee corpus and needs gensim"):
        lee_corpus(None, "train")


def test_rare_words_leave_the_text_and_chunks_keep_each_words_line():
    sentences = [["a", "b", "a"], ["c", "a", "b"], ["zz"]]
    vocab, counts = count_words(sentences, min_count=2)
    assert vocab.itos[4:] == ["a", "b"] and counts.tolist() == [0, 0, 0, 0, 3, 2]
    data = chunked_stream(sentences, vocab, chunk_words=2)
    assert data.fields["tokens"].tolist() == [[4, 5], [4, 4], [5, -1]]
    assert data.fields["sentence"].tolist() == [[0, 0], [0, 1], [1, -1]]
    with pytest.raises(UserError, match="task.min_count=5"):
        count_words(sentences, min_count=5)


# --- word2vec's sampling, as gensim and word2vec.c do it --------------------------
def _gensim_model(sentences, **settings):
    gensim = pytest.importorskip("gensim")
    model = gensim.models.Word2Vec(vector_size=8, min_count=1, workers=1, seed=0, **settings)
    model.build_vocab(sentences)
    return model


def _zipf_sentences(words: int = 40, length: int = 20000, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, words + 1)
    tokens = rng.choice([f"w{i}" for i in range(words)], size=length, p=weights / weights.sum())
    return [list(tokens[i : i + 10]) for i in range(0, length, 10)]


@pytest.mark.parametrize("sample", [1e-3, 1e-4, 0.0])
def test_the_keep_probability_is_gensims(sample):
    sentences = _zipf_sentences()
    model = _gensim_model(sentences, sample=sample)
    counts = torch.tensor([model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key])
    expected = [model.wv.get_vecattr(w, "sample_int") / 2**32 for w in model.wv.index_to_key]
    assert keep_probabilities(counts, sample).tolist() == pytest.approx(expected, abs=1e-9)


def test_the_noise_distribution_is_unigram_to_the_three_quarters():
    sentences = _zipf_sentences()
    model = _gensim_model(sentences, negative=5)
    counts = torch.tensor([model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key])
    expected = counts.double() ** 0.75 / (counts.double() ** 0.75).sum()
    noise = noise_distribution(counts)
    assert torch.allclose(noise, expected, atol=1e-12)
    gensim_noise = np.diff(model.cum_table, prepend=0) / model.cum_table[-1]  # gensim's table, as probabilities
    assert np.allclose(noise.numpy(), gensim_noise, atol=1e-8)
    table = unigram_table(noise)  # each word's share of word2vec.c's table is within one entry
    shares = torch.bincount(table.long(), minlength=len(counts)).double()
    assert (shares - noise * len(table)).abs().max() <= 1.0
    drawn = torch.bincount(table[torch.randint(0, len(table), (200_000,))].long(), minlength=len(counts)) / 200_000
    assert (drawn - noise).abs().max() < 0.005


def test_the_huffman_tree_is_word2vec_cs_and_as_short_as_gensims():
    counts = [50, 30, 30, 12, 7, 7, 3, 1]
    tree = huffman_tree(counts)
    assert tree.lengths.tolist() == [2, 2, 2, 3, 4, 5, 6, 6]  # by hand: a tie of 30s merges the inner node first
    assert tree.points[:, 0].tolist() == [len(counts) - 2] * len(counts), "every path starts at the root"
    codes = {"".join(map(str, tree.codes[w, : tree.lengths[w]].tolist())) for w in range(len(counts))}
    assert len(codes) == len(counts) and not any(a != b and b.startswith(a) for a in codes for b in codes)
    sentences = [[f"w{i}"] * n for i, n in enumerate(counts)]
    model = _gensim_model(sentences, hs=1, negative=0)
    gensim_cost = sum(model.wv.get_vecattr(w, "count") * len(model.wv.get_vecattr(w, "code"))
                      for w in model.wv.index_to_key)
    assert sum(c * n for c, n in zip(counts, tree.lengths.tolist())) == gensim_cost  # both optimal


def test_windows_stay_in_their_sentence_and_within_the_window():
    counts = torch.tensor([0, 0, 0, 0, 5, 5, 5, 5])
    sampler = ExampleSampler(counts, sample=0.0, window=2, negative=3, first_word=4)
    tokens = torch.tensor([[4, 5, 6, 7, 4, 5]], dtype=torch.int32)
    sentences = torch.tensor([[0, 0, 0, 1, 1, 1]], dtype=torch.int32)
    examples = sampler.skipgram(tokens, sentences)
    pairs = set(zip(examples.targets["negative"].rows[:, 0].tolist(), examples.inputs.tolist()))
    assert pairs <= {(4, 5), (4, 6), (5, 4), (5, 6), (6, 4), (6, 5), (7, 4), (7, 5), (4, 7), (4, 5), (5, 7), (5, 4)}
    assert all(r >= 4 for r in examples.targets["negative"].rows.flatten().tolist()), "noise is never a special row"
    assert (examples.targets["negative"].labels[:, 0] == 1).all() and (examples.targets["negative"].labels[:, 1:] == 0).all()


# --- one update of each model ---------------------------------------------------
def _task(overrides, corpus_file):
    cfg = compose_cfg(["task=word2vec", "dataset=text", f"dataset.root={corpus_file}", "task.min_count=1",
                       "task.chunk_words=200", "dataset.batch_size=4", *overrides])
    task = TASKS.get("word2vec")(cfg)
    task.build_dataset("train")
    torch.manual_seed(0)
    task.models = task.build_models()
    task.active = task.models
    return task


@pytest.mark.parametrize(("overrides", "words"), [([], 100), (["model.hs=true", "model.negative=0"], 80),
                                                 (["model.hs=true"], 40)], ids=["negative", "hs", "both"])
def test_hierarchical_softmax_updates_take_fewer_words(overrides, words, topics_file):
    """The Huffman tree's top rows sum more gradients per update than a word's row: hs
    takes 0.8 of task.chunk_words, and 0.4 beside negative sampling (each diverges on
    ShapesWorld a step above that, conf/task/word2vec.yaml)."""
    task = _task(["task.chunk_words=100", "dataset.batch_size=1", *overrides], topics_file)
    chunks = task.build_dataset("train")
    size = chunks[0]["tokens"].numel()
    assert words * 0.75 <= size <= words, size
    assert int((chunks.fields["tokens"] >= 0).sum()) == chunks.meta["words"]  # every word, once


def _sgd_step(task, lr=0.025):
    params = list(task.models["model"].parameters())

    def step(name, loss):
        assert name == "main" and torch.isfinite(loss)
        loss.backward()
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad.to_dense() if p.grad is not None else 0
                p.grad = None

    return step


@pytest.mark.parametrize("overrides", [["model=skipgram"], ["model=cbow"], ["model=skipgram", "model.hs=true"],
                                       ["model=cbow", "model.hs=true", "model.negative=0"],
                                       ["model=cbow", "model.cbow_mean=false"]],
                         ids=["skipgram", "cbow", "skipgram-hs-and-negative", "cbow-hs", "cbow-sum"])
def test_one_training_step_changes_every_table(overrides, topics_file):
    task = _task(overrides, topics_file)
    before = {k: v.clone() for k, v in task.models["model"].state_dict().items()}
    batch = task.examples_batch([task.build_dataset("train")[i] for i in range(4)])
    logs = task.train_step(batch, _sgd_step(task))
    assert math.isfinite(float(logs["loss"])) and float(logs["loss"]) > 0
    after = task.models["model"].state_dict()
    assert set(after) == set(before) and all(not torch.equal(before[k], after[k]) for k in after)


def test_pair_counts_and_gathered_rows_give_the_same_loss_and_gradients(topics_file, monkeypatch):
    task = _task(["model=skipgram", "model.hs=true"], topics_file)
    samples = [task.build_dataset("train")[i] for i in range(4)]
    monkeypatch.setattr(w2v, "COUNT_RATIO", 1e9)
    torch.manual_seed(1)
    counted = task.examples_batch(samples)
    assert "negative.share" in counted and "hs.share" in counted
    monkeypatch.setattr(w2v, "COUNT_RATIO", 0)
    torch.manual_seed(1)
    gathered = task.examples_batch(samples)
    assert "negative.share" not in gathered and "negative.rows" in gathered
    assert "negative.rows" not in counted  # the counts travel alone
    assert int(counted["example_count"]) == int(gathered["example_count"]) == len(gathered["chunks"])
    results = []
    for batch in (counted, gathered):
        model = task.models["model"]
        losses = list(task._chunk_losses(batch, 4))
        grads = torch.autograd.grad(losses[0], [model.input, model.negative, model.hs])
        results.append((losses[0].detach(), grads))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.allclose(a, b.to_dense(), atol=1e-5)


# --- learning, files, errors through the CLI --------------------------------------
def test_skipgram_learns_which_words_share_contexts(tmp_path, topics_file):
    run = tmp_path / "run"
    cli_in_process(["task=word2vec", "dataset=text", f"dataset.root={topics_file}", "task.min_count=1",
                    "task.sample=0", "task.chunk_words=40", "trainer.epochs=2", "model.dim=16", *QUICK,
                    f"hydra.run.dir={run}"])  # 12 words: small updates (see conf/task/word2vec.yaml)
    from gensim.models import KeyedVectors

    vectors = KeyedVectors.load_word2vec_format(str(run / "vectors.bin"), binary=True)
    same = np.mean([vectors.similarity(f"red{i}", f"red{j}") for i in range(6) for j in range(6) if i != j])
    other = np.mean([vectors.similarity(f"red{i}", f"blue{j}") for i in range(6) for j in range(6)])
    assert same > 0.5 and same - other > 0.5, (same, other)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    start = 6 * math.log(2)  # zero output vectors: every one of the 1 + 5 scores is 0
    assert records[-1]["train_loss"] < 0.6 * start


def test_a_checkpoint_predicts_and_evaluates_writing_vectors_gensim_loads(tmp_path, topics_file):
    gensim = pytest.importorskip("gensim")
    questions = tmp_path / "questions.txt"
    questions.write_text(": topics\nred0 red1 blue0 blue1\nred0 red1 green0 green1\n")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("red0\tred1\t9\nred0\tblue1\t1\nblue2\tblue3\t8\nred4\tblue5\t2\n")
    base = ["task=word2vec", "dataset=text", f"dataset.root={topics_file}", "task.min_count=1", *QUICK,
            f"task.questions={questions}", f"task.pairs={pairs}"]
    run = tmp_path / "run"
    cli_in_process([*base, "trainer.max_steps=1", f"hydra.run.dir={run}"])
    ckpt = run / "checkpoints" / "last.pt"

    cli_in_process([*base, "mode=predict", f"ckpt={ckpt}", "prompt=red0 blue1 nothing", f"hydra.run.dir={tmp_path / 'p'}"])
    records = [json.loads(line) for line in (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()]
    assert [r["input"] for r in records] == ["red0", "blue1", "nothing"]
    assert len(records[0]["neighbours"]) == 8 and records[2]["prediction"] == "(not in the vocabulary)"
    for name in ("vectors.txt", "vectors.bin", "neighbours.md", "projection.png"):
        assert (tmp_path / "p" / name).is_file(), name
    assert "| red0 |" in (tmp_path / "p" / "neighbours.md").read_text()

    cli_in_process([*base, "mode=eval", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'e'}"])
    scores = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert {"analogy_acc", "questions_acc", "questions_oov", "spearman", "pearson"} <= set(scores)
    assert scores["questions_oov"] == 50.0  # 'green0' is unknown: one of two questions skipped
    text = gensim.models.KeyedVectors.load_word2vec_format(str(tmp_path / "e" / "vectors.txt"))
    binary = gensim.models.KeyedVectors.load_word2vec_format(str(tmp_path / "e" / "vectors.bin"), binary=True)
    saved = torch.load(ckpt, weights_only=True)["models"]["model"]["input"][4:].numpy()
    assert text.index_to_key == binary.index_to_key and len(text.index_to_key) == 12
    assert np.array_equal(binary.vectors, saved) and np.allclose(text.vectors, saved)


@pytest.mark.parametrize(("args", "expected"), [
    (["model=skipgrm"], "unknown model 'skipgrm'. Did you mean 'skipgram'?"),
    (["model=cnn"], "task=word2vec cannot train model=cnn (a classifier model); pick one of: cbow, skipgram"),
    (["dataset=text", "dataset.root=/no/such/corpus.txt"], "no such file or folder '/no/such/corpus.txt'"),
    (["task.questions=/no/such/questions.txt"], "task.questions '/no/such/questions.txt' does not exist"),
])
def test_bad_word2vec_input_is_one_line(tmp_path, args, expected):
    result = run_cli(["task=word2vec", *args, f"paths.output_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("cvtrain: error: ") and expected in result.stderr, result.stderr
