"""Phases: a network that grows mid-run keeps its optimizer state, its EMA and its phase
across a crash, in one process and under DDP with two gloo ranks killed by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import compose_cfg, flat_state
from toy_growing import ARGS, Growing

from cvtrain.engine.launcher import free_port
from cvtrain.engine.trainer import Trainer

TESTS = Path(__file__).resolve().parent


def _fit(run: Path, crash_at=None) -> Trainer:
    cfg = compose_cfg(ARGS)
    task = Growing(cfg)
    task.crash_at = crash_at
    trainer = Trainer(cfg, task, run)
    trainer.fit()
    return trainer


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)


def _assert_same_run(a: Path, b: Path) -> None:
    """Weights, EMA weights, optimizer and schedule states bit for bit."""
    sa, sb = _state(a), _state(b)
    assert sa["trainer"]["phase"] == sb["trainer"]["phase"] == 1
    fa, fb = (flat_state({k: s[k] for k in ("models", "ema", "optimizers", "schedulers")}) for s in (sa, sb))
    assert fa.keys() == fb.keys()
    different = [k for k in fa if not torch.equal(fa[k], fb[k])]
    assert not different, f"not bit-identical: {different[:5]}"


def test_growing_keeps_the_optimizer_state_of_old_layers_and_seeds_the_ema_of_new_ones(tmp_path):
    trainer = _fit(tmp_path / "run")
    model, ema = trainer.task.models["model"], trainer.ema["model"].module
    assert len(model.blocks) == len(ema.blocks) == 1 and trainer.phase == 1
    steps = {p: trainer.optimizers["main"].state[p]["step"] for p in model.parameters()}
    assert float(steps[model.stem.weight]) == 2 * 4 + 2 * 6, "the stem's Adam moments lived through the change"
    assert float(steps[model.blocks[0].weight]) == 2 * 6, "the new block's started at the change"
    assert trainer.schedulers["main"].last_epoch == 20, "the schedule went on from its own step count"
    assert trainer.schedulers["main"].get_last_lr()[0] < 0.01, "and kept decaying"
    assert not torch.equal(ema.blocks[0].weight, model.blocks[0].weight), "the EMA averages the new block too"
    state = _state(tmp_path / "run")
    assert state["trainer"]["phase"] == 1 and "blocks.0.weight" in state["models"]["model"]


@pytest.mark.parametrize("crash_at", [(2, 8), (3, 15)], ids=["before-the-change-was-saved", "after-it-was-saved"])
def test_a_crashed_growing_run_resumes_in_its_phase_to_the_same_weights(tmp_path, crash_at):
    _fit(tmp_path / "whole")
    with pytest.raises(RuntimeError, match="crash"):
        _fit(tmp_path / "crashed", crash_at=crash_at)
    assert _state(tmp_path / "crashed")["trainer"]["phase"] == (0 if crash_at[0] == 2 else 1)
    _fit(tmp_path / "crashed")
    _assert_same_run(tmp_path / "whole", tmp_path / "crashed")


def _start_ranks(run: Path, stall_epoch: int | None = None) -> list[subprocess.Popen]:
    port = free_port()
    extra = [] if stall_epoch is None else [str(stall_epoch)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    return [
        subprocess.Popen([sys.executable, str(TESTS / "toy_growing.py"), str(run), str(rank), "2", str(port), *extra],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(2)
    ]


def _finish(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]


@pytest.mark.slow
def test_a_growing_ddp_run_killed_after_the_change_resumes_in_the_same_phase(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _finish(_start_ranks(whole))
    procs = _start_ranks(killed, stall_epoch=3)
    try:
        deadline = time.monotonic() + 240
        while not all((killed / f"stalled.{r}").exists() for r in range(2)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "the ranks never reached epoch 3"
            time.sleep(0.2)
        for proc in procs:  # only the processes this test started, by PID
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)
    assert all(proc.returncode == -signal.SIGKILL for proc in procs)
    saved = _state(killed)
    assert saved["trainer"]["phase"] == 1 and saved["trainer"]["epoch"] == 3, "last.pt is from after the change"
    _finish(_start_ranks(killed))
    _assert_same_run(whole, killed)
