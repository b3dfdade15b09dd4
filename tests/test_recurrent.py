"""Recurrent layers: the course cells against their equations, torch, gradcheck and a tiny task."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from cvtrain.errors import UserError
from cvtrain.models import recurrent
from cvtrain.models.recurrent import CourseRecurrent, FusedRecurrent, GRUCell, LSTMCell, RNNCell, build_recurrent
from cvtrain.registry import MODELS


def _set(linear: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> None:
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)


def _sigmoid(v: torch.Tensor) -> torch.Tensor:
    return 1 / (1 + torch.exp(-v))


# --- course cells against the equations ------------------------------------------------

X = torch.tensor([[0.5, -1.0]], dtype=torch.float64)  # one sample, input size 2
H = torch.tensor([[0.2, -0.3]], dtype=torch.float64)  # hidden size 2


def test_rnn_cell_is_tanh_of_w_times_concat():
    cell = RNNCell(2, 2).double()
    w = torch.tensor([[0.1, 0.2, 0.3, 0.4], [-0.5, 0.6, -0.7, 0.8]], dtype=torch.float64)
    b = torch.tensor([0.05, -0.1], dtype=torch.float64)
    _set(cell.linear, w, b)
    x0, x1, h0, h1 = 0.5, -1.0, 0.2, -0.3
    expected = torch.tensor([[
        torch.tanh(torch.tensor(0.1 * x0 + 0.2 * x1 + 0.3 * h0 + 0.4 * h1 + 0.05)),
        torch.tanh(torch.tensor(-0.5 * x0 + 0.6 * x1 - 0.7 * h0 + 0.8 * h1 - 0.1)),
    ]], dtype=torch.float64)
    torch.testing.assert_close(cell(X, H), expected)
    # no state means a zero state
    torch.testing.assert_close(cell(X), cell(X, torch.zeros_like(H)))


def test_gru_cell_follows_the_course_equations():
    cell = GRUCell(2, 2).double()
    wz = torch.tensor([[0.3, -0.2, 0.5, 0.1], [0.0, 0.4, -0.6, 0.2]], dtype=torch.float64)
    wr = torch.tensor([[-0.1, 0.7, 0.2, -0.3], [0.5, 0.5, 0.1, 0.9]], dtype=torch.float64)
    w = torch.tensor([[0.8, -0.4, 0.3, 0.6], [-0.2, 0.1, -0.9, 0.4]], dtype=torch.float64)
    bz, br, b = (torch.tensor(v, dtype=torch.float64) for v in ([0.1, -0.2], [0.0, 0.3], [-0.05, 0.15]))
    _set(cell.update, wz, bz)
    _set(cell.reset, wr, br)
    _set(cell.candidate, w, b)
    h, x = H[0], X[0]
    # [h_{t-1}, x_t] = (h0, h1, x0, x1): column j of W multiplies the j-th entry
    hx = torch.tensor([h[0], h[1], x[0], x[1]], dtype=torch.float64)
    z = _sigmoid(torch.stack([sum(wz[i, j] * hx[j] for j in range(4)) for i in range(2)]) + bz)
    r = _sigmoid(torch.stack([sum(wr[i, j] * hx[j] for j in range(4)) for i in range(2)]) + br)
    rhx = torch.tensor([r[0] * h[0], r[1] * h[1], x[0], x[1]], dtype=torch.float64)
    h_tilde = torch.tanh(torch.stack([sum(w[i, j] * rhx[j] for j in range(4)) for i in range(2)]) + b)
    expected = (1 - z) * h + z * h_tilde
    torch.testing.assert_close(cell(X, H)[0], expected)


def test_lstm_cell_equals_torch_lstm_cell_with_mapped_weights():
    torch.manual_seed(0)
    ours, theirs = LSTMCell(3, 4), nn.LSTMCell(3, 4)
    _set(ours.gates, torch.cat([theirs.weight_ih, theirs.weight_hh], dim=1), theirs.bias_ih + theirs.bias_hh)
    x, h, c = torch.randn(5, 3), torch.randn(5, 4), torch.randn(5, 4)
    for got, want in zip(ours(x, (h, c)), theirs(x, (h, c))):
        torch.testing.assert_close(got, want)
    for got, want in zip(ours(x), theirs(x)):
        torch.testing.assert_close(got, want)


def test_course_gru_is_not_torch_gru_except_when_the_reset_gate_is_open():
    """Map torch's GRU weights as closely as the forms allow: the course z is torch's
    1 - z, the course candidate uses W_in, W_hn and b_in + b_hn. With the reset gate
    forced to 1 the two agree; with a real reset gate they differ."""
    torch.manual_seed(0)
    torch_cell, cell = nn.GRUCell(3, 4).double(), GRUCell(3, 4).double()
    (w_ir, w_iz, w_in), (w_hr, w_hz, w_hn) = torch_cell.weight_ih.chunk(3), torch_cell.weight_hh.chunk(3)
    (b_ir, b_iz, b_in), (b_hr, b_hz, b_hn) = torch_cell.bias_ih.chunk(3), torch_cell.bias_hh.chunk(3)
    # course concatenation is [h, x]
    _set(cell.update, -torch.cat([w_hz, w_iz], 1), -(b_iz + b_hz))
    _set(cell.reset, torch.cat([w_hr, w_ir], 1), b_ir + b_hr)
    _set(cell.candidate, torch.cat([w_hn, w_in], 1), b_in + b_hn)
    x, h = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    assert (cell(x, h) - torch_cell(x, h)).abs().max() > 1e-2, "different functions should differ"
    with torch.no_grad():  # reset gate = sigmoid(+large) = 1 in both
        torch_cell.bias_ih[:4] += 100.0
        cell.reset.bias += 100.0
    torch.testing.assert_close(cell(x, h), torch_cell(x, h))


# --- gradients -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [RNNCell, GRUCell, LSTMCell])
def test_cells_pass_gradcheck(cls):
    torch.manual_seed(0)
    cell = cls(3, 2).double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    if cls is LSTMCell:
        c = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, h, c: cell(x, (h, c)), (x, h, c))
    else:
        assert torch.autograd.gradcheck(cell, (x, h))
    # parameters too: the weights are what training differentiates
    params = tuple(p.detach().clone().requires_grad_() for p in cell.parameters())
    names = [n for n, _ in cell.named_parameters()]

    inputs = (x.detach(), (h.detach(), h.detach()) if cls is LSTMCell else h.detach())

    def by_params(*values):
        return torch.func.functional_call(cell, dict(zip(names, values)), inputs)

    assert torch.autograd.gradcheck(by_params, params)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_two_layer_course_stack_passes_gradcheck(kind):
    torch.manual_seed(0)
    stack = CourseRecurrent(kind, 2, 3, num_layers=2).double()
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
    if kind == "lstm":
        c0 = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
        def flat(x, h, c):
            out, (h, c) = stack(x, (h, c))
            return out, h, c

        assert torch.autograd.gradcheck(flat, (x, h0, c0))
    else:
        assert torch.autograd.gradcheck(lambda x, h: stack(x, h), (x, h0))


# --- sequences: course vs fused ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_course_and_fused_share_shapes_and_state_format(kind):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4)
    course, fused = (build_recurrent(kind, cell, 4, 6, num_layers=2, dropout=0.1) for cell in ("course", "fused"))
    assert isinstance(course, CourseRecurrent) and isinstance(fused, FusedRecurrent)
    (out_c, state_c), (out_f, state_f) = course(x), fused(x)
    assert out_c.shape == out_f.shape == (3, 5, 6)
    if kind == "lstm":
        assert isinstance(state_c, tuple) and isinstance(state_f, tuple) and len(state_c) == len(state_f) == 2
        assert [s.shape for s in state_c] == [s.shape for s in state_f] == [(2, 3, 6)] * 2
    else:
        assert isinstance(state_c, torch.Tensor) and state_c.shape == state_f.shape == (2, 3, 6)
    # each takes its own final state back, and the last output is the top layer's state
    for model in (course.eval(), fused.eval()):
        out, state = model(x)
        top = state[0][-1] if kind == "lstm" else state[-1]
        torch.testing.assert_close(out[:, -1], top)
        more, _ = model(x[:, :2], state)
        assert more.shape == (3, 2, 6)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_course_rnn_and_lstm_stacks_equal_torch_with_mapped_weights(kind):
    """Splitting the sequence into two calls with the state in between gives the same outputs too."""
    torch.manual_seed(0)
    course, fused = CourseRecurrent(kind, 3, 4, num_layers=2), FusedRecurrent(kind, 3, 4, num_layers=2)
    for layer, cell in enumerate(course.cells):
        w_ih, w_hh = getattr(fused.rnn, f"weight_ih_l{layer}"), getattr(fused.rnn, f"weight_hh_l{layer}")
        b = getattr(fused.rnn, f"bias_ih_l{layer}") + getattr(fused.rnn, f"bias_hh_l{layer}")
        _set(cell.gates if kind == "lstm" else cell.linear, torch.cat([w_ih, w_hh], 1), b)
    x = torch.randn(2, 6, 3)
    out_c, state_c = course(x)
    out_f, state_f = fused(x)
    torch.testing.assert_close(out_c, out_f)
    first, mid = course(x[:, :4])
    second, _ = course(x[:, 4:], mid)
    torch.testing.assert_close(torch.cat([first, second], 1), out_f)


def test_inputs_must_be_batch_first_3d():
    with pytest.raises(ValueError, match="batch, time, 4"):
        build_recurrent("gru", "course", 4, 8)(torch.randn(5, 4))
    with pytest.raises(ValueError, match="batch, time, 4"):
        build_recurrent("gru", "fused", 4, 8)(torch.randn(2, 5, 3))


# --- registry and config errors --------------------------------------------------------


def _cfg(name: str, **over):
    base = dict(name=name, family="recurrent", cell="course", embed_dim=8, hidden_dim=16, num_layers=2,
                dropout=0.1, encoder="cnn", freeze_encoder=True)
    return OmegaConf.create({**base, **over})


@pytest.mark.parametrize("name", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("cell", ["course", "fused"])
def test_registered_builders_build_from_a_dictconfig(name, cell):
    assert recurrent.KINDS == ("rnn", "gru", "lstm")
    assert {"rnn", "gru", "lstm"} <= set(MODELS.names(("recurrent",)))
    model = MODELS.get(name, ("recurrent",))(_cfg(name, cell=cell), input_size=8)
    assert (model.kind, model.cell, model.hidden_size, model.num_layers) == (name, cell, 16, 2)
    out, _ = model(torch.randn(2, 3, 8))
    assert out.shape == (2, 3, 16)


def test_cell_defaults_to_course():
    cfg = OmegaConf.create(dict(name="gru", family="recurrent", hidden_dim=4, num_layers=1, dropout=0.0))
    assert isinstance(MODELS.get("gru", ("recurrent",))(cfg, input_size=3), CourseRecurrent)


def test_bad_cell_is_a_user_error_listing_the_choices():
    with pytest.raises(UserError, match="course, fused") as err:
        MODELS.get("lstm", ("recurrent",))(_cfg("lstm", cell="cudnn"), input_size=8)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("over, key", [
    (dict(hidden_dim=0), "model.hidden_dim"),
    (dict(num_layers=1.5), "model.num_layers"),
    (dict(dropout=1.0), "model.dropout"),
])
def test_bad_sizes_are_user_errors(over, key):
    with pytest.raises(UserError, match=key):
        MODELS.get("rnn", ("recurrent",))(_cfg("rnn", **over), input_size=8)


# --- it learns ----------------------------------------------------------------------------


def test_course_gru_learns_a_periodic_sequence():
    """0 0 1 2 repeated: after a 0 the next token depends on the one before, so the
    model must use its state (a memoryless predictor stays above ln 2 / 2 = 0.35);
    the loss has to fall far below that."""
    torch.manual_seed(0)
    seq = torch.tensor([0, 0, 1, 2]).repeat(4)
    windows = torch.stack([seq[s:s + 11] for s in range(4)])  # 4 phases, 10 steps + target
    inputs = nn.functional.one_hot(windows[:, :-1], 3).float()
    targets = windows[:, 1:]
    rnn, head = build_recurrent("gru", "course", 3, 16), nn.Linear(16, 3)
    opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=0.05)

    def loss_now():
        out, _ = rnn(inputs)
        # skip the first two steps: the phase is unknowable before then
        return nn.functional.cross_entropy(head(out[:, 2:]).reshape(-1, 3), targets[:, 2:].reshape(-1))

    start = loss_now().item()
    for _ in range(60):
        opt.zero_grad()
        loss = loss_now()
        loss.backward()
        opt.step()
    final = loss_now().item()
    assert start > 0.9 and final < 0.05, (start, final)
