"""Sequence generation over any step function: greedy, sampling and beam search.

A model plugs in through one function,

    step(tokens: LongTensor (N,), state) -> (log_probs (N, V), new_state)

that consumes the previous token of each of N rows and returns the log-probabilities
of the next one. `state` is anything made of tensors (a tensor, nested tuples, lists
or dicts of them, or None) whose dimension `state_batch_dim` indexes the rows: 1 for
an RNN's (L, B, H) state, 0 for (B, ...) image features. Keeping the decoders this
generic lets the same code caption images and sample a language model.

Every decoder returns a LongTensor (B, T) of generated tokens, T <= max_len: no <bos>,
and each row cut before its first <eos>, the rest filled with `pad`. `max_len` counts
generated tokens, <eos> included. Rows whose generation ended are still fed to `step`
(with <eos>), which keeps the batch rectangular; their outputs are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Step = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]
Hypothesis = tuple[float, torch.Tensor]  # (normalized score, tokens without <bos>/<eos>)


# --- state helpers -------------------------------------------------------------------


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: Any) -> Any:
    """`state` with `fn` applied to every tensor, its structure kept."""
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {key: map_state(fn, value) for key, value in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(fn, value) for value in state)
    return state


def select_state(state: Any, index: torch.Tensor, dim: int = 1) -> Any:
    """Rows `index` of every tensor along `dim`: reorders beams, or repeats inputs."""
    return map_state(lambda t: t.index_select(dim, index.to(t.device)), state)


def repeat_state(state: Any, times: int, dim: int = 1) -> Any:
    """Each row repeated `times` times in place (row b -> rows b*times ... b*times+times-1)."""
    first = _first_tensor(state)
    if first is None:
        return state
    index = torch.arange(first.shape[dim], device=first.device).repeat_interleave(times)
    return select_state(state, index, dim)


def _first_tensor(state: Any) -> torch.Tensor | None:
    if isinstance(state, torch.Tensor):
        return state
    values = state.values() if isinstance(state, dict) else state if isinstance(state, (tuple, list)) else ()
    for value in values:
        found = _first_tensor(value)
        if found is not None:
            return found
    return None


def _batch(state: Any, dim: int, batch_size: int | None, device: Any) -> tuple[int, torch.device]:
    """The batch size and device: given, or read from the state's first tensor."""
    first = _first_tensor(state)
    if batch_size is None:
        if first is None:
            raise ValueError("the state holds no tensor: pass batch_size")
        batch_size = first.shape[dim]
    if device is None:
        device = first.device if first is not None else torch.device("cpu")
    return batch_size, torch.device(device)


def _cut_at_eos(tokens: torch.Tensor, eos: int, pad: int) -> torch.Tensor:
    """(B, T) tokens with each row's first <eos> and what follows set to `pad`, and the
    columns that are padding in every row dropped."""
    ended = (tokens == eos).long().cumsum(dim=1) > 0
    lengths = (~ended).sum(dim=1)
    width = int(lengths.max()) if tokens.shape[0] else 0
    return tokens.masked_fill(ended, pad)[:, :width]


def _pad_rows(rows: list[torch.Tensor], pad: int, device: torch.device) -> torch.Tensor:
    width = max((len(row) for row in rows), default=0)
    out = torch.full((len(rows), width), pad, dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


# --- greedy and sampling --------------------------------------------------------------


def _decode(
    step: Step, state: Any, bos: int, eos: int, max_len: int, choose: Callable[[torch.Tensor], torch.Tensor],
    state_batch_dim: int, batch_size: int | None, device: Any, pad: int,
) -> torch.Tensor:
    """One token per row per step, picked by `choose(log_probs) -> (N,)`, until every
    row has produced <eos> or max_len tokens."""
    n, device = _batch(state, state_batch_dim, batch_size, device)
    tokens = torch.full((n,), bos, dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    out = []
    for _ in range(max_len):
        log_probs, state = step(tokens, state)
        tokens = choose(log_probs).masked_fill(done, eos)
        out.append(tokens)
        done |= tokens == eos
        if bool(done.all()):
            break
    generated = torch.stack(out, dim=1) if out else torch.empty(n, 0, dtype=torch.long, device=device)
    return _cut_at_eos(generated, eos, pad)


def greedy(
    step: Step, state: Any, bos: int, eos: int, max_len: int, *,
    state_batch_dim: int = 1, batch_size: int | None = None, device: Any = None, pad: int = 0,
) -> torch.Tensor:
    """The most likely next token at every step: fast, but can miss the most likely
    sequence when a likely first token leads to unlikely continuations."""
    return _decode(step, state, bos, eos, max_len, lambda lp: lp.argmax(dim=-1),
                   state_batch_dim, batch_size, device, pad)


def sample(
    step: Step, state: Any, bos: int, eos: int, max_len: int, temperature: float = 1.0, top_k: int = 0,
    generator: torch.Generator | None = None, *,
    state_batch_dim: int = 1, batch_size: int | None = None, device: Any = None, pad: int = 0,
) -> torch.Tensor:
    """Tokens drawn from softmax(log_probs / temperature), restricted to the `top_k`
    most likely (0: all). Lower temperature is closer to greedy; top_k=1 is greedy.
    Pass a seeded `generator` for repeatable samples."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}; use greedy() for temperature 0")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")

    def choose(log_probs: torch.Tensor) -> torch.Tensor:
        logits = log_probs.float() / temperature
        if 0 < top_k < logits.shape[-1]:
            kth = logits.topk(top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return _decode(step, state, bos, eos, max_len, choose, state_batch_dim, batch_size, device, pad)


# --- beam search -----------------------------------------------------------------------


def _normalize(score: torch.Tensor | float, length: int, length_penalty: float) -> float:
    """Sum of log-probs / length ** length_penalty (0: the plain sum)."""
    return float(score) / (length ** length_penalty) if length_penalty else float(score)


def _best_possible(alive: torch.Tensor, length: int, max_len: int, length_penalty: float) -> float:
    """An upper bound on the final score of any continuation of the live beams.

    Log-probs are <= 0, so a beam's sum only falls; dividing a negative sum by the
    largest L ** penalty reachable (L from `length` + 1 to max_len) bounds it above.
    """
    best = float(alive.max())
    if best == float("-inf") or length >= max_len:
        return float("-inf")
    if not length_penalty:
        return best
    return best / max((length + 1) ** length_penalty, max_len ** length_penalty)


def beam_search(
    step: Step, state: Any, bos: int, eos: int, max_len: int, beam_size: int, length_penalty: float = 0.0, *,
    state_batch_dim: int = 1, batch_size: int | None = None, device: Any = None, pad: int = 0,
) -> torch.Tensor:
    """The highest-scoring sequence per input among `beam_size` hypotheses kept per step.

    All B inputs run together as B * beam_size rows. Each step extends every live beam,
    keeps the 2 * beam_size best extensions, moves those ending in <eos> within the top
    beam_size to the finished list, and continues with the best beam_size others, so the
    beam never shrinks. Score = sum of log-probs / length ** length_penalty, length
    counting the <eos>: 0 is the plain sum (favours short outputs), 1 the per-token mean.
    Search stops once no live beam can beat an input's best finished hypothesis; at
    max_len the live beams compete as they are. Rows are returned without <bos> and cut
    before <eos>, padded with `pad`.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    b, device = _batch(state, state_batch_dim, batch_size, device)
    k = beam_size
    state = repeat_state(state, k, state_batch_dim)
    tokens = torch.full((b * k,), bos, dtype=torch.long, device=device)
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # identical beams at the start: expand only the first
    history = torch.empty(b, k, 0, dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(b)]
    for t in range(1, max_len + 1):
        log_probs, state = step(tokens, state)
        vocab = log_probs.shape[-1]
        candidates = (scores.unsqueeze(-1) + log_probs.view(b, k, vocab).float()).view(b, k * vocab)
        top, index = candidates.topk(min(2 * k, k * vocab), dim=1)
        beam, token = index // vocab, index % vocab
        _collect_finished(finished, history, top[:, :k], beam[:, :k], token[:, :k] == eos, t, length_penalty)
        scores, beam, token = _keep_alive(top, beam, token, token == eos, k)
        history = torch.cat([history.gather(1, beam.unsqueeze(-1).expand(-1, -1, history.shape[2])),
                             token.unsqueeze(-1)], dim=2)
        rows = (beam + torch.arange(b, device=device).unsqueeze(1) * k).view(-1)
        state = select_state(state, rows, state_batch_dim)
        tokens = token.view(-1)
        if all(_settled(finished[i], scores[i], t, max_len, length_penalty) for i in range(b)):
            break
    best = [_best(finished[i], history[i], scores[i], max_len, length_penalty) for i in range(b)]
    return _pad_rows(best, pad, device)


def _collect_finished(
    finished: list[list[Hypothesis]], history: torch.Tensor, top: torch.Tensor, beam: torch.Tensor,
    is_eos: torch.Tensor, length: int, length_penalty: float,
) -> None:
    """Record each <eos> extension among an input's top-k as a finished hypothesis."""
    for i, j in (is_eos & torch.isfinite(top)).nonzero().tolist():
        sequence = history[i, beam[i, j]]
        finished[i].append((_normalize(top[i, j], length, length_penalty), sequence))


def _keep_alive(
    top: torch.Tensor, beam: torch.Tensor, token: torch.Tensor, is_eos: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k best extensions that do not end in <eos>, in score order.

    Among 2k candidates at most k end in <eos> (one per beam), so k others always exist
    (given a vocabulary of two or more).
    """
    width = top.shape[1]
    rank = torch.arange(width, device=top.device).expand_as(top) + is_eos.long() * width
    keep = rank.argsort(dim=1)[:, :k]
    scores = top.gather(1, keep).masked_fill(is_eos.gather(1, keep), float("-inf"))
    return scores, beam.gather(1, keep), token.gather(1, keep)


def _settled(finished: list[Hypothesis], alive: torch.Tensor, length: int, max_len: int, length_penalty: float) -> bool:
    """True when a finished hypothesis already beats every continuation of the live beams."""
    if not finished:
        return length >= max_len
    best = max(score for score, _ in finished)
    return best >= _best_possible(alive, length, max_len, length_penalty)


def _best(
    finished: list[Hypothesis], history: torch.Tensor, alive: torch.Tensor, max_len: int, length_penalty: float
) -> torch.Tensor:
    """The best finished hypothesis; live beams compete only once they reach max_len
    (cut there, they are complete): an earlier stop means none could win."""
    length = history.shape[1]
    pool = list(finished)
    if length == max_len:
        pool += [(_normalize(alive[j], length, length_penalty), history[j])
                 for j in range(len(alive)) if torch.isfinite(alive[j])]
    if not pool:  # max_len == 0
        return history.new_empty(0)
    return max(pool, key=lambda item: item[0])[1]
