"""Recurrent layers in two forms: the course's equations, and torch's fused kernels.

The course form (`RNNCell`, `GRUCell`, `LSTMCell`, stacked by `CourseRecurrent`) is
written so the code reads like the lecture: every gate is one `nn.Linear` over the
concatenation of the input and the previous state, applied one time step at a time in
Python. It is slow but inspectable, and it is the function the course defines.

The fused form (`FusedRecurrent`) wraps `torch.nn.RNN`/`GRU`/`LSTM`, which run whole
sequences in one kernel (cuDNN on a GPU). Both forms take the same call,
`module(inputs (B, T, in), state=None) -> (outputs (B, T, H), final_state)`, with
torch's state format: `h (L, B, H)` for rnn and gru, `(h, c)` for lstm, so one can be
swapped for the other by changing `model.cell`.

The vanilla RNN and the LSTM compute the same functions in both forms (the weights map
one to one). The GRU does NOT: the course applies the reset gate before the matrix
product and interpolates towards the candidate with z, while torch applies it after
and interpolates towards the old state (see `GRUCell`). Variable lengths are left to
the caller: pad the batch and mask the loss.

Builders are registered in `cvtrain.registry.MODELS`, family "recurrent", as `rnn`,
`gru` and `lstm`, with signature `build(cfg, *, input_size) -> nn.Module`; cfg fields
`cell` ("course" or "fused"), `hidden_dim`, `num_layers` and `dropout` are read, other
fields (`embed_dim`, encoder settings) belong to the models that use these layers.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Union

import torch
from torch import nn

from cvtrain.errors import UserError, unknown_choice
from cvtrain.registry import MODELS

KINDS = ("rnn", "gru", "lstm")
CELLS = ("course", "fused")

# h (L, B, H) for rnn and gru; (h, c), both (L, B, H), for lstm; as torch.
State = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]


def _init_uniform(module: nn.Module, hidden_size: int) -> None:
    """U(-1/sqrt(H), 1/sqrt(H)) for every parameter, torch's recurrent init, so the
    course and fused forms start from the same distribution and train alike."""
    bound = 1.0 / math.sqrt(hidden_size)
    for param in module.parameters():
        nn.init.uniform_(param, -bound, bound)


def _zeros(x: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """A zero state for the batch of `x`, on its device and dtype."""
    return x.new_zeros(x.shape[0], hidden_size)


# --- one time step, as the course writes it ------------------------------------------


class RNNCell(nn.Module):
    """Vanilla RNN: h_t = tanh(W·[x_t, h_{t-1}] + b).

    `linear.weight` is W, of shape (H, in + H): its first `in` columns act on x_t,
    the rest on h_{t-1}; torch's nn.RNNCell splits the same matrix into weight_ih and
    weight_hh and the bias into two that add up to b.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.linear = nn.Linear(input_size + hidden_size, hidden_size)
        _init_uniform(self, hidden_size)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        h = _zeros(x, self.hidden_size) if h is None else h
        return torch.tanh(self.linear(torch.cat([x, h], dim=-1)))


class GRUCell(nn.Module):
    """GRU as the course defines it (Cho et al., 2014):

        z_t = σ(W_z·[h_{t-1}, x_t] + b_z)            update gate
        r_t = σ(W_r·[h_{t-1}, x_t] + b_r)            reset gate
        h̃_t = tanh(W·[r_t * h_{t-1}, x_t] + b)       candidate
        h_t = (1 - z_t) * h_{t-1} + z_t * h̃_t

    This is a different function from torch.nn.GRU, whatever the weights: torch resets
    AFTER the product, n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), and its z keeps the
    old state, h' = (1 - z) * n + z * h. The second difference is only a relabelling
    (torch's z is the course's 1 - z); the first is real, and the two agree only where
    the reset gate is 1. The fused "gru" therefore trains a related but not identical
    model; the cuDNN kernel implements torch's form only.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        both = hidden_size + input_size
        self.update = nn.Linear(both, hidden_size)  # W_z, b_z
        self.reset = nn.Linear(both, hidden_size)  # W_r, b_r
        self.candidate = nn.Linear(both, hidden_size)  # W, b
        _init_uniform(self, hidden_size)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        h = _zeros(x, self.hidden_size) if h is None else h
        hx = torch.cat([h, x], dim=-1)
        z = torch.sigmoid(self.update(hx))
        r = torch.sigmoid(self.reset(hx))
        h_tilde = torch.tanh(self.candidate(torch.cat([r * h, x], dim=-1)))
        return (1 - z) * h + z * h_tilde


class LSTMCell(nn.Module):
    """LSTM (Hochreiter & Schmidhuber; forget gate of Gers et al.):

        [i, f, g, o] = W·[x_t, h_{t-1}] + b,  split in four blocks of H rows
        c_t = σ(f) * c_{t-1} + σ(i) * tanh(g)
        h_t = σ(o) * tanh(c_t)

    The blocks are in torch's order (i, f, g, o), so torch.nn.LSTMCell's weights map
    exactly: W = [weight_ih | weight_hh] (columns), b = bias_ih + bias_hh.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.gates = nn.Linear(input_size + hidden_size, 4 * hidden_size)
        _init_uniform(self, hidden_size)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if state is None:
            state = (_zeros(x, self.hidden_size), _zeros(x, self.hidden_size))
        h, c = state
        i, f, g, o = self.gates(torch.cat([x, h], dim=-1)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


_CELLS = {"rnn": RNNCell, "gru": GRUCell, "lstm": LSTMCell}


# --- whole sequences ----------------------------------------------------------------


class CourseRecurrent(nn.Module):
    """A stack of course cells run over a batch-first sequence, step by step.

    Layer l reads the outputs of layer l-1 (dropout between layers, none after the last,
    as torch does); the returned state is the last step's state of every layer, in
    torch's format, so it can seed the next call (e.g. when generating one token at a
    time).
    """

    def __init__(self, cell_type: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        if cell_type not in _CELLS:
            raise unknown_choice("recurrent layer", cell_type, KINDS)
        self.kind, self.cell = cell_type, "course"
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.cells = nn.ModuleList(_CELLS[cell_type](size, hidden_size) for size in sizes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, inputs: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        _check_inputs(inputs, self.input_size)
        x, finals = inputs, []
        for layer, cell in enumerate(self.cells):
            s = self._layer_state(state, layer)
            outputs = []
            for t in range(x.shape[1]):
                s = cell(x[:, t], s)
                outputs.append(s[0] if self.kind == "lstm" else s)
            x = torch.stack(outputs, dim=1)
            if layer < self.num_layers - 1:
                x = self.dropout(x)
            finals.append(s)
        return x, self._stack_states(finals)

    def _layer_state(self, state: State | None, layer: int) -> Any:
        """Layer `layer`'s slice of a torch-format state (None: start from zeros)."""
        if state is None:
            return None
        if self.kind == "lstm":
            return state[0][layer], state[1][layer]
        return state[layer]

    def _stack_states(self, finals: list) -> State:
        """Per-layer final states -> torch's (L, B, H) format."""
        if self.kind == "lstm":
            return torch.stack([h for h, _ in finals]), torch.stack([c for _, c in finals])
        return torch.stack(finals)


class FusedRecurrent(nn.Module):
    """torch.nn.RNN (tanh) / GRU / LSTM, batch first, with CourseRecurrent's call.

    Inter-layer dropout is passed only when there are several layers: torch warns
    otherwise, and with one layer it would do nothing in either form.
    """

    def __init__(self, kind: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        if kind not in KINDS:
            raise unknown_choice("recurrent layer", kind, KINDS)
        self.kind, self.cell = kind, "fused"
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        args = dict(batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        if kind == "rnn":
            self.rnn = nn.RNN(input_size, hidden_size, num_layers, nonlinearity="tanh", **args)
        else:
            self.rnn = (nn.GRU if kind == "gru" else nn.LSTM)(input_size, hidden_size, num_layers, **args)

    def forward(self, inputs: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        _check_inputs(inputs, self.input_size)
        return self.rnn(inputs, state)


def _check_inputs(inputs: torch.Tensor, input_size: int) -> None:
    """Both forms accept only (B, T, in): torch would also take unbatched (T, in), which
    the course form does not, and the two must stay interchangeable."""
    if inputs.dim() != 3 or inputs.shape[-1] != input_size:
        raise ValueError(f"expected inputs of shape (batch, time, {input_size}), got {tuple(inputs.shape)}")


def build_recurrent(
    kind: str, cell: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0
) -> nn.Module:
    """A recurrent stack of `kind` (rnn, gru, lstm) in `cell` form (course, fused).

    Sizes and dropout are checked here, where a config's values arrive, so a bad value
    is a one-line UserError rather than a shape error deep inside the first batch.
    """
    if kind not in KINDS:
        raise unknown_choice("recurrent layer", kind, KINDS)
    if cell not in CELLS:
        raise unknown_choice("recurrent cell", str(cell), CELLS, "Set model.cell=course or model.cell=fused.")
    _check_sizes(input_size, hidden_size, num_layers, dropout)
    form = CourseRecurrent if cell == "course" else FusedRecurrent
    return form(kind, int(input_size), int(hidden_size), int(num_layers), float(dropout))


def _check_sizes(input_size: int, hidden_size: int, num_layers: int, dropout: float) -> None:
    for key, value, example in (("input size", input_size, 32), ("model.hidden_dim", hidden_size, 128),
                                ("model.num_layers", num_layers, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise UserError(f"{key}: must be a positive integer, got {value!r}; try {example}.")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
        raise UserError(f"model.dropout: must be in [0, 1), got {dropout}; try model.dropout=0.2.")


# --- registered builders ----------------------------------------------------------------


def _field(cfg: Any, key: str, default: Any) -> Any:
    """cfg[key] when cfg has it (DictConfig or dict), else `default`."""
    getter = getattr(cfg, "get", None)
    value = getter(key, default) if getter else getattr(cfg, key, default)
    return default if value is None else value


def _register(kind: str) -> None:
    """Register the builder for `kind` in MODELS, family "recurrent"."""

    def build(cfg: Any, *, input_size: int) -> nn.Module:
        return build_recurrent(
            kind,
            _field(cfg, "cell", "course"),
            input_size,
            _field(cfg, "hidden_dim", 128),
            _field(cfg, "num_layers", 1),
            _field(cfg, "dropout", 0.0),
        )

    build.__name__ = kind
    build.__doc__ = f"A {kind} stack over (B, T, input_size), course or fused per model.cell."
    MODELS.register(kind, family="recurrent")(build)


for _kind in KINDS:
    _register(_kind)
