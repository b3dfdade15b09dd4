"""Signals: a stopped run saves where it is, exits 128 + signal, and resumes exactly.

Every process here is started by the test and ended by PID; each test checks the
process table afterwards, so no worker is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import flat_state, read_jsonl, run_cli

ARGS = ["task=classification", "dataset.num_train=512", "dataset.num_val=128", "dataset.num_test=128",
        "dataset.batch_size=16", "trainer.epochs=2", "trainer.progress=plain", "trainer.log_every=1",
        "trainer.deterministic=true", "logger.images=false"]


def start_cli(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """`python -m cvtrain ARGS` in the background, its output in `log`."""
    env = {k: v for k, v in os.environ.items() if k != "CVTRAIN_RUN_STAMP"}
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "cvtrain", *args], cwd=cwd, env=dict(env, PYTHONUNBUFFERED="1"),
                                stdout=out, stderr=subprocess.STDOUT)


def wait_for_line(proc: subprocess.Popen, log: Path, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, f"the run ended before printing {text!r}:\n{log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no {text!r} after {timeout} s:\n{log.read_text()[-2000:]}"
        time.sleep(0.05)


def processes_naming(fragment: str) -> list[int]:
    """PIDs of live processes whose command line contains `fragment` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if fragment in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def assert_no_process_left(fragment: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while processes_naming(fragment) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = processes_naming(fragment)
    for pid in left:  # end them, so one failure does not leak into the next tests
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes outlived the run: {left}"


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    return {**state["models"]["model"], **{f"opt.{k}": v for k, v in flat_state(state["optimizers"]).items()}}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"not bit-identical: {different[:5]}"


def interrupt_then_resume(tmp_path: Path, extra: list[str], sig: int = signal.SIGTERM) -> tuple[Path, str]:
    """Run, send `sig` once the 5th batch of epoch 1 is done, check the stop, then resume."""
    run = tmp_path / "stopped"
    log = tmp_path / "stopped.log"
    proc = start_cli([*ARGS, *extra, f"hydra.run.dir={run}"], tmp_path, log)
    try:
        wait_for_line(proc, log, "epoch 1 5/32")
        os.kill(proc.pid, sig)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_no_process_left(str(run))
    text = log.read_text()
    assert code == 128 + sig, text[-3000:]
    stop_line = [line for line in text.splitlines() if line.startswith("cvtrain: stopped by")]
    assert len(stop_line) == 1, text[-3000:]
    assert f"stopped by {signal.Signals(sig).name} at epoch 1, batch " in stop_line[0]
    assert f"resume={run}" in stop_line[0]
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["trainer"]["epoch"] == 0 and 5 <= state["trainer"]["batch_in_epoch"] < 32, state["trainer"]
    assert state["trainer"]["step"] == state["trainer"]["batch_in_epoch"], "it stopped after a whole optimizer step"
    resumed = run_cli([*ARGS, *extra, f"hydra.run.dir={run}", f"resume={run}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"batch {state['trainer']['batch_in_epoch']} of epoch 1" in resumed.stdout
    return run, stop_line[0]


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_is_bit_identical(tmp_path):
    reference = tmp_path / "reference"
    done = run_cli([*ARGS, f"hydra.run.dir={reference}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run, _ = interrupt_then_resume(tmp_path, [])
    assert_same(final_weights(run), final_weights(reference))
    records, expected = read_jsonl(run / "metrics.jsonl"), read_jsonl(reference / "metrics.jsonl")
    assert [r["step"] for r in records] == [r["step"] for r in expected] == [32, 64]
    for got, want in zip(records, expected):
        assert got["acc1"] == want["acc1"]
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-6), "the train loss survives the stop"


@pytest.mark.slow
def test_sigint_and_sigusr1_stop_the_same_way(tmp_path):
    for sig in (signal.SIGINT, signal.SIGUSR1):
        folder = tmp_path / signal.Signals(sig).name
        folder.mkdir()
        run, line = interrupt_then_resume(folder, ["trainer.epochs=1"], sig)
        assert (run / "checkpoints" / "last.pt").is_file() and signal.Signals(sig).name in line


@pytest.mark.slow
def test_sigterm_to_two_gloo_workers_then_resume_is_bit_identical(tmp_path):
    ddp = ["trainer.devices=2", "trainer.num_threads=1"]
    reference = tmp_path / "reference"
    done = run_cli([*ARGS, *ddp, f"hydra.run.dir={reference}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run, _ = interrupt_then_resume(tmp_path, ddp)
    assert_same(final_weights(run), final_weights(reference))
    assert_no_process_left(str(tmp_path))


@pytest.mark.slow
def test_sigkill_of_the_launcher_leaves_no_worker(tmp_path):
    run, log = tmp_path / "run", tmp_path / "run.log"
    proc = start_cli([*ARGS, "trainer.devices=2", "trainer.num_threads=1", f"hydra.run.dir={run}"], tmp_path, log)
    try:
        wait_for_line(proc, log, "epoch 1 3/32")
        assert len(processes_naming(f"cvtrain.app {run}")) == 2, "two workers run"
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_no_process_left(str(run), timeout=60)
    # The workers got SIGTERM when their launcher died, so they saved before leaving.
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["trainer"]["batch_in_epoch"] >= 3


def test_a_slurm_warning_signal_requeues_the_job_with_scontrol(tmp_path, monkeypatch):
    from cvtrain.engine.stopping import requeue_slurm_job

    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "scontrol"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert "requeued SLURM job 4242" in requeue_slurm_job(signal.SIGUSR1, signal.SIG_DFL)
    assert calls.read_text().split() == ["requeue", "4242"]
    assert requeue_slurm_job(signal.SIGTERM, signal.SIG_DFL) == "", "SIGTERM (the end) is not a warning"
    monkeypatch.delenv("SLURM_JOB_ID")
    assert requeue_slurm_job(signal.SIGUSR1, signal.SIG_DFL) == "", "not under SLURM: nothing to requeue"


def test_submitits_own_handler_gets_the_signal_after_the_save(monkeypatch):
    from cvtrain.engine.stopping import StopRequests, requeue_slurm_job

    seen = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(("submitit", signum)))
    try:
        with StopRequests() as stops:
            os.kill(os.getpid(), signal.SIGUSR2)
            os.kill(os.getpid(), signal.SIGUSR2)  # repeated: ignored
            assert stops.signum == signal.SIGUSR2 and seen == [], "the handler only records the request"
            monkeypatch.setenv("SLURM_JOB_ID", "7")
            assert "handed over" in requeue_slurm_job(stops.signum, stops.previous_handler(stops.signum))
        assert seen == [("submitit", signal.SIGUSR2)]
        assert signal.getsignal(signal.SIGUSR2) is not None and signal.getsignal(signal.SIGUSR2) != stops._handle
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_signal_landing_during_the_stop_all_reduce_is_kept_for_the_next_step(monkeypatch):
    """The launcher signals every worker at once, so each may receive it while inside the
    step's all-reduce, after putting in 0: the agreed 0 must not erase the request (the
    run then trained to the end, ignoring SIGTERM)."""
    import torch.distributed as dist

    from cvtrain.engine.stopping import StopRequests

    def all_reduce_while_signalled(flag, op):  # one rank: the reduction is the flag itself
        os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before this returns

    monkeypatch.setattr(dist, "all_reduce", all_reduce_while_signalled)
    with StopRequests() as stops:
        assert stops.agreed(torch.device("cpu"), distributed=True) == 0, "this step had already agreed on 0"
        assert stops.signum == signal.SIGTERM
        assert stops.agreed(torch.device("cpu"), distributed=True) == signal.SIGTERM, "the next step stops"


def test_another_ranks_signal_stops_this_rank_too(monkeypatch):
    import torch.distributed as dist

    from cvtrain.engine.stopping import StopRequests

    def all_reduce_with_a_signalled_peer(flag, op):
        flag.fill_(max(int(flag.item()), signal.SIGUSR1))

    monkeypatch.setattr(dist, "all_reduce", all_reduce_with_a_signalled_peer)
    with StopRequests() as stops:
        assert stops.agreed(torch.device("cpu"), distributed=True) == signal.SIGUSR1
        assert stops.signum == signal.SIGUSR1
