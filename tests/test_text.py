"""Tokenizer and vocabulary: splitting, ids, determinism, and saving inside a checkpoint."""

from __future__ import annotations

import random

import pytest
import torch

from cvtrain.data.text import Vocabulary, detokenize, tokenize
from cvtrain.errors import UserError


@pytest.mark.parametrize("text, tokens", [
    ("A dog runs.", ["a", "dog", "runs", "."]),
    ("Two DOGS, 3 cats!", ["two", "dogs", ",", "3", "cats", "!"]),
    ("the dog's ball isn't red", ["the", "dog's", "ball", "isn't", "red"]),
    ("  spaced\tout\nlines ", ["spaced", "out", "lines"]),
    ("(a)-b", ["(", "a", ")", "-", "b"]),
    ("Un café crème", ["un", "café", "crème"]),
    ("snake_case", ["snake", "_", "case"]),
    ("", []),
])
def test_word_tokenizer(text, tokens):
    assert tokenize(text) == tokens


def test_char_tokenizer_keeps_case_and_spaces_and_round_trips():
    text = "Hi, Bob!\n"
    assert tokenize(text, "char") == ["H", "i", ",", " ", "B", "o", "b", "!", "\n"]
    assert detokenize(tokenize(text, "char"), "char") == text


def test_detokenize_words_joins_with_spaces():
    assert detokenize(["a", "dog", "."]) == "a dog ."


def test_unknown_level_is_a_user_error():
    with pytest.raises(UserError, match="word, char"):
        tokenize("x", "bpe")
    with pytest.raises(UserError, match="word, char"):
        detokenize(["x"], "bpe")


CORPUS = [tokenize(s) for s in ["a dog runs", "a cat runs", "a dog sleeps", "the bird sings"]]


def test_specials_come_first_at_fixed_ids():
    vocab = Vocabulary.build(CORPUS)
    assert vocab.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert (vocab.PAD, vocab.BOS, vocab.EOS, vocab.UNK) == (0, 1, 2, 3)


def test_order_is_frequency_then_alphabetical():
    vocab = Vocabulary.build(CORPUS)
    # a:3; dog, runs:2; bird, cat, sings, sleeps, the:1
    assert vocab.itos[4:] == ["a", "dog", "runs", "bird", "cat", "sings", "sleeps", "the"]


def test_min_freq_and_max_size():
    assert Vocabulary.build(CORPUS, min_freq=2).itos[4:] == ["a", "dog", "runs"]
    capped = Vocabulary.build(CORPUS, max_size=6)
    assert len(capped) == 6 and capped.itos[4:] == ["a", "dog"]
    # a tie at the cut is broken alphabetically: bird before cat
    assert Vocabulary.build(CORPUS, max_size=8).itos[4:] == ["a", "dog", "runs", "bird"]
    with pytest.raises(UserError, match="max_size"):
        Vocabulary.build(CORPUS, max_size=4)
    with pytest.raises(UserError, match="min_freq"):
        Vocabulary.build(CORPUS, min_freq=0)


def test_build_is_independent_of_corpus_order():
    shuffled = list(CORPUS)
    random.Random(0).shuffle(shuffled)
    shuffled = [list(reversed(tokens)) for tokens in shuffled]
    assert Vocabulary.build(shuffled) == Vocabulary.build(CORPUS)


def test_special_spellings_in_data_are_not_counted_twice():
    vocab = Vocabulary.build([["<unk>", "<pad>", "x"]])
    assert vocab.itos == ["<pad>", "<bos>", "<eos>", "<unk>", "x"]


def test_encode_decode_round_trip():
    vocab = Vocabulary.build(CORPUS)
    tokens = tokenize("the dog sings")
    ids = vocab.encode(tokens, add_bos=True, add_eos=True)
    assert ids[0] == vocab.BOS and ids[-1] == vocab.EOS and len(ids) == 5
    assert vocab.decode(ids) == tokens
    assert vocab.decode(ids, strip_special=False) == ["<bos>", *tokens, "<eos>"]


def test_unknown_words_become_unk():
    vocab = Vocabulary.build(CORPUS)
    ids = vocab.encode(["a", "zebra", "runs"])
    assert ids == [vocab.stoi["a"], vocab.UNK, vocab.stoi["runs"]]
    assert vocab.decode(ids) == ["a", "<unk>", "runs"]


def test_decode_stops_at_eos_skips_padding_and_takes_tensors():
    vocab = Vocabulary.build(CORPUS)
    a, dog = vocab.stoi["a"], vocab.stoi["dog"]
    row = torch.tensor([vocab.BOS, a, vocab.PAD, dog, vocab.EOS, a, vocab.PAD])
    assert vocab.decode(row) == ["a", "dog"]
    with pytest.raises(ValueError, match="outside"):
        vocab.decode([len(vocab)])


def test_to_dict_survives_a_weights_only_checkpoint(tmp_path):
    vocab = Vocabulary.build(CORPUS + [tokenize("Un café, s'il vous plaît")])
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "vocab": vocab.to_dict()}, path)
    loaded = torch.load(path, weights_only=True)
    again = Vocabulary.from_dict(loaded["vocab"])
    assert again == vocab and again.itos == vocab.itos and again.stoi == vocab.stoi
    assert again.encode(tokenize("un café")) == vocab.encode(tokenize("un café"))


@pytest.mark.parametrize("data", [{}, {"version": 2, "tokens": ["<pad>"]}, {"version": 1, "tokens": ["a", "b"]},
                                  {"version": 1, "tokens": ["<pad>", "<bos>", "<eos>", "<unk>", "a", "a"]},
                                  {"version": 1, "tokens": "abc"}, None])
def test_from_dict_rejects_bad_data_as_user_error(data):
    with pytest.raises(UserError, match="vocabulary"):
        Vocabulary.from_dict(data)
