"""Non-finite losses: a NaN stops the run (or is skipped, if asked), and no checkpoint
ever holds NaN weights."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_cfg, read_jsonl, run_cli
from toy_tasks import Regression

from cvtrain.engine.trainer import Trainer
from cvtrain.errors import NonFiniteLoss


class PoisonedRegression(Regression):
    """Fit y = 2x; the loss of the batches numbered in `poisoned` (0-based) is NaN."""

    features, samples = 1, 256

    def __init__(self, cfg, poisoned=()):
        super().__init__(cfg)
        self.poisoned, self.batches = set(poisoned), 0
        self.weights_seen: list[torch.Tensor] = []

    def train_step(self, batch, step):
        self.weights_seen.append(self.models["model"].weight.detach().clone())
        loss = self.loss(batch)
        if self.batches in self.poisoned:
            loss = loss * float("nan")
        self.batches += 1
        step("main", loss)
        return {"loss": loss.detach()}


def _trainer(tmp_path, poisoned, *overrides):
    cfg = compose_cfg(["optimizer=sgd", "optimizer.lr=0.1", "scheduler=none", "dataset.batch_size=32",
                       "trainer.epochs=2", "trainer.progress=none", "logger.images=false", *overrides])
    task = PoisonedRegression(cfg, poisoned)
    return task, Trainer(cfg, task, tmp_path)


def test_a_nan_loss_stops_with_its_name_and_step_and_applies_no_update(tmp_path):
    task, trainer = _trainer(tmp_path, poisoned={11})  # epoch 2, its 4th batch (8 per epoch)
    with pytest.raises(NonFiniteLoss) as stop:
        trainer.fit()
    message = str(stop.value)
    assert "loss=nan" in message and "step 12 (epoch 2)" in message and "optimizer.lr" in message
    assert "best.pt and last.pt keep the last finite weights" in message
    assert trainer.global_step == 11, "the bad step was not taken"
    assert torch.equal(task.models["model"].weight, task.weights_seen[-1]), "no NaN update was applied"
    for name in ("best", "last"):
        state = torch.load(tmp_path / "checkpoints" / f"{name}.pt", weights_only=True)
        assert all(torch.isfinite(t).all() for t in state["models"]["model"].values())


def test_patience_skips_bad_steps_in_a_row_then_gives_up(tmp_path):
    task, trainer = _trainer(tmp_path / "skip", {3, 4}, "trainer.nonfinite_patience=2", "trainer.epochs=4")
    results = trainer.fit()
    assert trainer.global_step == 32 - 2, "two steps skipped, the rest taken"
    assert math.isfinite(results["mse"]) and results["mse"] < 0.05, "it still learned"
    records = read_jsonl(tmp_path / "skip" / "metrics.jsonl")
    assert all(math.isfinite(r["train_loss"]) for r in records), "skipped batches stay out of the logged loss"

    task, trainer = _trainer(tmp_path / "stop", {3, 4, 5}, "trainer.nonfinite_patience=2")
    with pytest.raises(NonFiniteLoss, match="step 4 "):
        trainer.fit()


def test_gradient_accumulation_drops_the_whole_cycle_of_a_nan_micro_batch(tmp_path):
    task, trainer = _trainer(tmp_path, {2}, "trainer.grad_accum=2", "trainer.nonfinite_patience=1")
    before = {}

    def spy(batch, step, original=task.train_step):
        before[task.batches] = task.models["model"].weight.detach().clone()
        return original(batch, step)

    task.train_step = spy
    trainer.fit()
    assert trainer.global_step == 8 - 1, "the cycle holding the NaN micro-batch took no step"
    assert torch.equal(before[2], before[4]), "batches 2-3 (one cycle) changed nothing"


@pytest.mark.slow
def test_a_huge_learning_rate_stops_the_cli_and_best_pt_stays_finite(tmp_path):
    run = tmp_path / "run"
    result = run_cli(["task=classification", "dataset.num_train=512", "dataset.num_val=128", "dataset.num_test=128",
                      "dataset.batch_size=16", "optimizer.lr=1e6", "trainer.val_every_steps=1",
                      "trainer.progress=none", "logger.images=false", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "non-finite" in lines[0] and "optimizer.lr" in lines[0], result.stderr
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in state["models"]["model"].values() if t.is_floating_point())
    records = read_jsonl(run / "metrics.jsonl")
    assert records and all("train_loss" in r for r in records), "the training loss is logged per evaluation"


def _nan_on_rank_one(rank: int) -> dict:
    from pathlib import Path
    from tempfile import mkdtemp

    from cvtrain.engine.distributed import DistEnv

    cfg = compose_cfg(["optimizer=sgd", "optimizer.lr=0.1", "scheduler=none", "dataset.batch_size=32",
                       "trainer.epochs=1", "trainer.progress=none", "logger.images=false"])
    task = PoisonedRegression(cfg, poisoned={3} if rank == 1 else set())
    trainer = Trainer(cfg, task, Path(mkdtemp()), DistEnv(rank, rank, 2))
    try:
        trainer.fit()
    except NonFiniteLoss as error:
        return {"stopped_at": trainer.global_step, "message": str(error)}
    return {"stopped_at": None}


def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    from conftest import run_gloo_ranks

    ranks = run_gloo_ranks(_nan_on_rank_one, tmp_path)
    assert [r["stopped_at"] for r in ranks] == [3, 3], ranks
