"""Collective helpers a task calls: gathers that keep gradients, one-collective metric
reductions, object gathers. Two gloo ranks must reproduce one process on the whole batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import run_gloo_ranks
from torch import nn

BATCH, TEMPERATURE = 8, 0.1


def _setup():
    """The same encoders and the same whole batch in every process (seeded)."""
    torch.manual_seed(0)
    encoders = nn.ModuleDict({"image": nn.Linear(8, 4), "text": nn.Linear(6, 4)})
    return encoders, torch.randn(BATCH, 8), torch.randn(BATCH, 6)


def _embed(encoders, images, texts):
    return F.normalize(encoders["image"](images), dim=1), F.normalize(encoders["text"](texts), dim=1)


def _clip_loss(image, text, rows: slice = slice(None)):
    """CLIP's symmetric contrastive loss of `rows` (image i matches text i) against every column."""
    labels = torch.arange(image.shape[0])[rows]
    per_image = F.cross_entropy(image[rows] @ text.T / TEMPERATURE, labels)
    per_text = F.cross_entropy(text[rows] @ image.T / TEMPERATURE, labels)
    return (per_image + per_text) / 2


def _grads(encoders) -> list[list[float]]:
    return [p.grad.flatten().tolist() for p in encoders.parameters()]


def _contrastive_rank(rank: int) -> dict:
    """One rank: embed its half of the batch, gather both halves with gradients, and compute
    (a) its share of the loss (its rows against all columns) and (b) the whole batch's loss;
    return the losses and the parameter gradients averaged over ranks, as DDP does."""
    import torch.distributed as dist

    from cvtrain.engine.distributed import all_gather_with_grad

    encoders, images, texts = _setup()
    world = dist.get_world_size()
    mine = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    image, text = _embed(encoders, images[mine], texts[mine])
    all_image, all_text = all_gather_with_grad(image), all_gather_with_grad(text)
    out = {}
    for name, loss in (("share", _clip_loss(all_image, all_text, mine)), ("whole", _clip_loss(all_image, all_text))):
        encoders.zero_grad()
        loss.backward(retain_graph=True)
        for p in encoders.parameters():  # DDP's reduction: the mean over ranks
            dist.all_reduce(p.grad)
            p.grad /= world
        out[name] = {"loss": loss.item(), "grads": _grads(encoders)}
    return out


def test_a_contrastive_loss_over_gathered_features_matches_one_process(tmp_path):
    encoders, images, texts = _setup()
    reference = _clip_loss(*_embed(encoders, images, texts))
    reference.backward()
    want = _grads(encoders)
    ranks = run_gloo_ranks(_contrastive_rank, tmp_path)
    # Every rank sees the whole similarity matrix: its whole-batch loss is the reference,
    # and the mean of the ranks' shares is too.
    assert [r["whole"]["loss"] for r in ranks] == pytest.approx([reference.item()] * 2, rel=1e-5)
    assert sum(r["share"]["loss"] for r in ranks) / len(ranks) == pytest.approx(reference.item(), rel=1e-5)
    # The gather's backward sums each slice's gradient over the ranks, so DDP's mean of the
    # parameter gradients is the reference gradient, for both ways of writing the loss.
    for variant in ("share", "whole"):
        for rank in ranks:
            for got, expected in zip(rank[variant]["grads"], want):
                torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=1e-4, atol=1e-6)


def _reduce_rank(rank: int) -> dict:
    from cvtrain.engine.distributed import all_gather_objects, reduce_state

    state = {"correct": torch.tensor(3 + rank), "confusion": torch.tensor([[rank, 1.0], [2.0, 10.0 * rank]]),
             "seen": torch.tensor([rank, 5 - rank], dtype=torch.int32)}
    summed, largest = reduce_state(state), reduce_state(state, op="max")
    with pytest.raises(ValueError, match="unknown op 'mean'; use one of sum, max, min"):
        reduce_state(state, op="mean")
    assert state["correct"].item() == 3 + rank, "the state itself is left alone"
    assert summed["seen"].dtype == torch.int32 and summed["confusion"].shape == (2, 2)
    return {"sum": {k: v.tolist() for k, v in summed.items()}, "max": {k: v.tolist() for k, v in largest.items()},
            "objects": all_gather_objects({"rank": rank, "ids": list(range(rank + 1))})}


def test_reduce_state_reduces_every_entry_in_one_collective_and_objects_gather_in_rank_order(tmp_path):
    ranks = run_gloo_ranks(_reduce_rank, tmp_path)
    for rank in ranks:
        assert rank["sum"] == {"correct": 7, "confusion": [[1.0, 2.0], [4.0, 10.0]], "seen": [1, 9]}
        assert rank["max"] == {"correct": 4, "confusion": [[1.0, 1.0], [2.0, 10.0]], "seen": [1, 5]}
        assert rank["objects"] == [{"rank": 0, "ids": [0]}, {"rank": 1, "ids": [0, 1]}]


def test_the_helpers_are_the_identity_in_one_process():
    from cvtrain.engine.distributed import all_gather_objects, all_gather_with_grad, reduce_state

    features = torch.randn(4, 3, requires_grad=True)
    assert all_gather_with_grad(features) is features
    state = {"total": torch.tensor(5.0)}
    assert reduce_state(state, op="max") == state and reduce_state(state) is not state
    assert all_gather_objects("x") == ["x"]
