"""DistributedDataParallel on a CPU (gloo): two processes learn what one process learns."""

from __future__ import annotations

import sys

import pytest
from conftest import SMALL_DATA, read_jsonl, run_cli

ARGS = ["task=classification", *SMALL_DATA, "trainer.epochs=2", "trainer.progress=plain", "dataset.batch_size=64"]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    run = tmp_path_factory.mktemp("ddp") / "single"
    result = run_cli([*ARGS, f"hydra.run.dir={run}"], cwd=run.parent)
    assert result.returncode == 0, result.stderr
    return read_jsonl(run / "metrics.jsonl")


def test_two_processes_match_one_process(single, tmp_path):
    run = tmp_path / "ddp"
    result = run_cli([*ARGS, "trainer.devices=2", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2], "only rank 0 writes, once per evaluation"
    assert [r["step"] for r in records] == [r["step"] for r in single], "the global batch is the same"
    for a, b in zip(records, single):
        assert a["acc1"] == pytest.approx(b["acc1"], abs=0.04), (a, b)
    assert "2 process(es)" in result.stdout
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "config.yaml").is_file()


def test_torchrun_ranks_share_one_run_folder(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cvtrain",
               *ARGS, "trainer.epochs=1", f"paths.output_dir={out}"]
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "CVTRAIN_RUN_STAMP"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((out / "classification" / "cnn").iterdir())
    assert len(runs) == 1, f"every rank must write to one folder, got {runs}"
    assert [r["epoch"] for r in read_jsonl(runs[0] / "metrics.jsonl")] == [1]


# A stand-in worker: it records the stop signals it gets; `saves` then exits 128 + signal
# after a moment (saving), `stuck` never does (a rank blocked in a collective).
STANDIN = """
import os, signal, sys, time
seen = []
for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda s, f: seen.append(s))
print("ready", flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    if seen and sys.argv[1] == "saves":
        time.sleep(0.3)
        print("signals", len(seen), flush=True)
        os._exit(128 + seen[0])
    time.sleep(0.01)
"""


def _standins(mode: str) -> tuple[list[str], list]:
    import subprocess

    command = [sys.executable, "-c", STANDIN, mode]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    return command, procs


def _stop_launcher(command: list[str], second_signal_after: float | None) -> float:
    """The launcher's handler in this process: send it SIGTERM (and SIGINT a bit later);
    return how long until it raised the agent's SignalException."""
    import os
    import signal
    import threading
    import time

    from torch.distributed.elastic.multiprocessing.api import SignalException

    from cvtrain.engine.launcher import _SignalForwarder
    from cvtrain.engine.stopping import handled_by

    forwarder = _SignalForwarder(command)
    start = time.monotonic()
    if second_signal_after is not None:
        threading.Timer(second_signal_after, os.kill, (os.getpid(), signal.SIGINT)).start()
    with handled_by(forwarder.forward), pytest.raises(SignalException) as raised:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler raises out of here
    assert raised.value.sigval == signal.SIGTERM and forwarder.signum == signal.SIGTERM
    return time.monotonic() - start


def test_a_stop_signal_reaches_each_worker_once_and_the_launcher_waits_for_them():
    command, procs = _standins("saves")
    try:
        _stop_launcher(command, second_signal_after=None)
        assert all(proc.poll() is not None for proc in procs), "the handler returned before the workers exited"
        assert [proc.returncode for proc in procs] == [143, 143]
        assert [proc.stdout.read().strip() for proc in procs] == ["signals 1", "signals 1"]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_a_second_signal_kills_workers_that_do_not_exit():
    command, procs = _standins("stuck")
    try:
        assert _stop_launcher(command, second_signal_after=0.5) < 10
        assert [proc.wait(timeout=5) for proc in procs] == [-9, -9]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
