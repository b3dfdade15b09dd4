"""Greedy, sampling and beam search on hand-made Markov tables and a small recurrent model."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from cvtrain.models.decoding import beam_search, greedy, repeat_state, sample, select_state
from cvtrain.models.recurrent import build_recurrent

PAD, BOS, EOS, A, B, C = range(6)
V = 6


def table(rows: dict[int, dict[int, float]]) -> torch.Tensor:
    """A (V, V) log-prob table: row = previous token; unlisted next tokens get 0 probability."""
    probs = torch.zeros(V, V)
    for prev, nexts in rows.items():
        for nxt, p in nexts.items():
            probs[prev, nxt] = p
    probs[PAD, PAD] = probs[EOS, EOS] = 1.0  # rows never used as a context, but valid
    return probs.log()


# Greedy takes A (0.6), then ends with p 0.4: 0.24. Beam finds B then <eos>: 0.4 * 0.9 = 0.36.
TRAP = table({BOS: {A: 0.6, B: 0.4}, A: {EOS: 0.4, A: 0.3, B: 0.3}, B: {EOS: 0.9, A: 0.05, B: 0.05}})
# Beam ends after C (0.24); greedy keeps taking C (0.7) until max_len.
EASY = table({BOS: {C: 0.8, A: 0.2}, C: {C: 0.7, EOS: 0.3}, A: {EOS: 1.0}})
# Never ends: A B A B ...
LOOP = table({BOS: {A: 1.0}, A: {B: 0.9, EOS: 0.1}, B: {A: 0.9, EOS: 0.1}})
# <eos> at once is most likely.
QUIET = table({BOS: {EOS: 0.9, A: 0.1}, A: {EOS: 1.0}})
# Plain sum prefers [] (0.5); per-token mean prefers A B <eos> (0.5 * 0.9 * 0.95 over 3 tokens).
SHORT = table({BOS: {EOS: 0.5, A: 0.5}, A: {B: 0.9, EOS: 0.1}, B: {EOS: 0.95, A: 0.05}})


def markov_step(*tables: torch.Tensor):
    """A step function whose state (B,) picks each row's table; its batch dim is 0."""
    stacked = torch.stack(tables)

    def step(tokens, state):
        return stacked[state, tokens], state

    return step


def which(n: int = 1, start: int = 0) -> torch.Tensor:
    return torch.arange(start, start + n)


def log_prob(tab: torch.Tensor, seq: list[int]) -> float:
    """Total log-probability of <bos> seq <eos> under a table."""
    path = [BOS, *seq, EOS]
    return sum(float(tab[a, b]) for a, b in zip(path, path[1:]))


def test_beam_finds_the_sequence_greedy_misses():
    step = markov_step(TRAP)
    g = greedy(step, which(), BOS, EOS, 10, state_batch_dim=0)
    bs = beam_search(step, which(), BOS, EOS, 10, beam_size=2, state_batch_dim=0)
    assert g.tolist() == [[A]]
    assert bs.tolist() == [[B]]
    assert log_prob(TRAP, [B]) > log_prob(TRAP, [A])
    assert math.isclose(log_prob(TRAP, [B]), math.log(0.36), rel_tol=1e-5)
    assert math.isclose(log_prob(TRAP, [A]), math.log(0.24), rel_tol=1e-5)


@pytest.mark.parametrize("tab", [TRAP, EASY, LOOP, QUIET, SHORT])
def test_beam_size_one_is_greedy(tab):
    step = markov_step(tab)
    for max_len in (1, 3, 8):
        assert torch.equal(beam_search(step, which(), BOS, EOS, max_len, 1, state_batch_dim=0),
                           greedy(step, which(), BOS, EOS, max_len, state_batch_dim=0))


def test_length_penalty_trades_short_for_likely_per_token():
    step = markov_step(SHORT)
    assert beam_search(step, which(), BOS, EOS, 10, 2, length_penalty=0.0, state_batch_dim=0).tolist() == [[]]
    assert beam_search(step, which(), BOS, EOS, 10, 2, length_penalty=1.0, state_batch_dim=0).tolist() == [[A, B]]


def _brute_force(tab: torch.Tensor, max_len: int, length_penalty: float) -> list[int]:
    """The best-scoring output over every sequence up to max_len generated tokens."""
    words = [A, B, C]
    best, best_score = None, -math.inf
    for n in range(max_len + 1):
        for seq in itertools.product(words, repeat=n):
            if n < max_len:  # ends with <eos>: n + 1 tokens
                total, length = log_prob(tab, list(seq)), n + 1
            else:  # cut at max_len without <eos>
                path = [BOS, *seq]
                total, length = sum(float(tab[a, b]) for a, b in zip(path, path[1:])), n
            score = total / length ** length_penalty if length_penalty else total
            if score > best_score:
                best, best_score = list(seq), score
    return best


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("length_penalty", [0.0, 1.0, -0.5])
def test_a_beam_wider_than_the_tree_is_exact(seed, length_penalty):
    """With room for every prefix, beam search (early stopping included) is exhaustive search."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(V, V, generator=gen) * 1.5
    logits[:, [PAD, BOS]] = -math.inf
    tab = logits.log_softmax(-1)
    max_len = 4
    got = beam_search(markov_step(tab), which(), BOS, EOS, max_len, 128, length_penalty, state_batch_dim=0)
    assert got.tolist() == [_brute_force(tab, max_len, length_penalty)]


def test_batched_inputs_match_separate_runs_on_markov_tables():
    step = markov_step(TRAP, EASY, LOOP)
    for decode in (lambda s: greedy(step, s, BOS, EOS, 6, state_batch_dim=0, pad=PAD),
                   lambda s: beam_search(step, s, BOS, EOS, 6, 2, state_batch_dim=0, pad=PAD)):
        batch = decode(which(3))
        for i in range(3):
            alone = decode(which(1, i))
            assert batch[i, : alone.shape[1]].tolist() == alone[0].tolist()
            assert (batch[i, alone.shape[1]:] == PAD).all()
    assert beam_search(step, which(3), BOS, EOS, 6, 2, state_batch_dim=0).tolist() == [
        [B, PAD, PAD, PAD, PAD, PAD], [C, PAD, PAD, PAD, PAD, PAD], [A, B, A, B, A, B]]
    assert greedy(step, which(3), BOS, EOS, 6, state_batch_dim=0).tolist() == [
        [A, PAD, PAD, PAD, PAD, PAD], [C, C, C, C, C, C], [A, B, A, B, A, B]]


class TinyLM(nn.Module):
    """Embedding, a 2-layer GRU and a head: a step function over an (L, B, H) state."""

    def __init__(self, vocab: int = 7, hidden: int = 8):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.rnn = build_recurrent("gru", "course", hidden, hidden, num_layers=2)
        self.head = nn.Linear(hidden, vocab)

    def step(self, tokens, state):
        out, state = self.rnn(self.embed(tokens).unsqueeze(1), state)
        return self.head(out[:, 0]).log_softmax(-1), state


@torch.no_grad()
def test_batched_recurrent_state_matches_separate_runs():
    torch.manual_seed(0)
    lm = TinyLM().eval()
    state = torch.randn(2, 3, 8) * 2  # (L, B, H): batch dim 1
    for decode in (lambda s: greedy(lm.step, s, BOS, EOS, 12),
                   lambda s: beam_search(lm.step, s, BOS, EOS, 12, beam_size=3, length_penalty=0.7)):
        batch = decode(state)
        for i in range(3):
            alone = decode(state[:, i:i + 1])
            assert batch[i, : alone.shape[1]].tolist() == alone[0].tolist()
            assert (batch[i, alone.shape[1]:] == PAD).all()


@torch.no_grad()
def test_sampling_with_top_k_one_is_greedy():
    torch.manual_seed(0)
    lm = TinyLM().eval()
    state = torch.randn(2, 4, 8)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(sample(lm.step, state, BOS, EOS, 15, temperature=0.7, top_k=1, generator=gen),
                       greedy(lm.step, state, BOS, EOS, 15))


@torch.no_grad()
def test_sampling_is_repeatable_with_a_generator_and_follows_the_distribution():
    lm = TinyLM().eval()
    state = torch.randn(2, 4, 8)
    runs = [sample(lm.step, state, BOS, EOS, 10, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*runs)
    first = sample(markov_step(TRAP), torch.zeros(4000, dtype=torch.long), BOS, EOS, 1,
                   state_batch_dim=0, generator=torch.Generator().manual_seed(0))
    assert set(first.flatten().tolist()) <= {A, B}
    assert abs((first == A).float().mean().item() - 0.6) < 0.03
    # top_k=1 from the trap's start always takes A; higher temperature flattens toward 50/50
    assert (sample(markov_step(TRAP), torch.zeros(200, dtype=torch.long), BOS, EOS, 1, top_k=1,
                   state_batch_dim=0) == A).all()
    hot = sample(markov_step(TRAP), torch.zeros(4000, dtype=torch.long), BOS, EOS, 1, temperature=50.0,
                 state_batch_dim=0, generator=torch.Generator().manual_seed(1))
    assert abs((hot == A).float().mean().item() - 0.5) < 0.03


def test_max_len_is_respected():
    step = markov_step(LOOP)
    zero = torch.zeros(2, dtype=torch.long)
    expected = [[A, B, A, B, A]] * 2
    assert greedy(step, zero, BOS, EOS, 5, state_batch_dim=0).tolist() == expected
    assert beam_search(step, zero, BOS, EOS, 5, 3, state_batch_dim=0).tolist() == expected
    out = sample(step, zero, BOS, EOS, 5, state_batch_dim=0, generator=torch.Generator().manual_seed(0))
    assert out.shape[0] == 2 and out.shape[1] <= 5
    for decode in (greedy, lambda *a, **k: beam_search(*a, beam_size=2, **k)):
        assert decode(step, zero, BOS, EOS, 0, state_batch_dim=0).shape == (2, 0)


def test_all_eos_gives_empty_rows():
    step = markov_step(QUIET)
    zero = torch.zeros(3, dtype=torch.long)
    assert greedy(step, zero, BOS, EOS, 10, state_batch_dim=0).shape == (3, 0)
    assert beam_search(step, zero, BOS, EOS, 10, 4, state_batch_dim=0).shape == (3, 0)
    assert sample(step, zero, BOS, EOS, 10, top_k=1, state_batch_dim=0).shape == (3, 0)


def test_rows_ending_at_different_times_are_padded_and_never_resume():
    calls = []

    def step(tokens, state):
        calls.append(tokens.clone())
        return markov_step(QUIET, LOOP)(tokens, state)

    out = greedy(step, torch.tensor([0, 1]), BOS, EOS, 4, state_batch_dim=0, pad=-1)
    assert out.tolist() == [[-1, -1, -1, -1], [A, B, A, B]]
    assert [int(t[0]) for t in calls[1:]] == [EOS] * 3  # the ended row is fed <eos>


def test_stateless_steps_need_a_batch_size():
    def step(tokens, state):
        return TRAP[tokens], state

    assert greedy(step, None, BOS, EOS, 3, batch_size=2).tolist() == [[A], [A]]
    assert beam_search(step, None, BOS, EOS, 3, 2, batch_size=2).tolist() == [[B], [B]]
    with pytest.raises(ValueError, match="batch_size"):
        greedy(step, None, BOS, EOS, 3)


def test_state_helpers_keep_structure():
    h, c = torch.arange(6.0).view(1, 2, 3), torch.arange(6.0).view(1, 2, 3) + 10
    state = {"rnn": (h, c), "feat": [torch.tensor([[1.0], [2.0]]).T], "none": None}
    rep = repeat_state(state, 2, dim=1)
    assert rep["rnn"][0][0, :, 0].tolist() == [0, 0, 3, 3]
    assert rep["feat"][0].tolist() == [[1, 1, 2, 2]] and rep["none"] is None
    sel = select_state(rep, torch.tensor([3, 0]), dim=1)
    assert sel["rnn"][1][0, :, 0].tolist() == [13, 10]
    assert isinstance(sel["rnn"], tuple) and isinstance(sel["feat"], list)


def test_bad_arguments():
    step = markov_step(TRAP)
    with pytest.raises(ValueError, match="temperature"):
        sample(step, which(), BOS, EOS, 3, temperature=0.0, state_batch_dim=0)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(step, which(), BOS, EOS, 3, 0, state_batch_dim=0)
