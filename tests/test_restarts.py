"""Restarts under torch's elastic agent: a worker group whose worker fails starts again
and resumes from last.pt (trainer.max_restarts), and a failure without restarts ends the
run with that worker's one-line error, printed last.

The launcher runs in a subprocess started here (tests/restart_run.py, the `crash_once`
toy task on two workers); each test checks that no worker outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import read_jsonl
from test_signals import assert_no_process_left

SCRIPT = Path(__file__).with_name("restart_run.py")


def launch(run: Path, max_restarts: int, crash_rank: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CRASH_RANK", "CVTRAIN_RUN_STAMP")}
    if crash_rank is not None:
        env["CRASH_RANK"] = crash_rank
    result = subprocess.run([sys.executable, str(SCRIPT), str(run), str(max_restarts)], capture_output=True,
                            text=True, timeout=300, env=dict(env, PYTHONUNBUFFERED="1"), cwd=run.parent)
    assert_no_process_left(str(run))
    return result


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["models"]["model"]


@pytest.mark.slow
def test_a_worker_that_fails_once_is_restarted_and_resumes_from_last_pt(tmp_path):
    reference = launch(tmp_path / "reference", 0, crash_rank=None)
    assert reference.returncode == 0, reference.stderr[-3000:]
    result = launch(tmp_path / "restarted", 1, crash_rank="1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "injected crash on rank 1" in result.stderr, "the first attempt did fail"
    assert "resumed from" in result.stdout and "at epoch 1, step 8" in result.stdout, result.stdout[-2000:]
    got = read_jsonl(tmp_path / "restarted" / "metrics.jsonl")
    want = read_jsonl(tmp_path / "reference" / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in want] == [8, 16, 24], "each epoch logged once"
    for a, b in zip(got, want):
        assert a["mse"] == pytest.approx(b["mse"], rel=1e-6)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    for name, tensor in weights(tmp_path / "reference").items():
        torch.testing.assert_close(weights(tmp_path / "restarted")[name], tensor, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_without_restarts_a_failed_worker_ends_the_run_with_its_one_line_error(tmp_path):
    result = launch(tmp_path / "failed", 0, crash_rank="1")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last == "cvtrain: error: worker rank 1 failed with RuntimeError: injected crash on rank 1 (traceback above)"
    for noise in ("ChildFailedError", "Root Cause", "torch.distributed.elastic", "Sending process"):
        assert noise not in result.stderr, f"the agent's report leaked: {noise}"
    assert [r["epoch"] for r in read_jsonl(tmp_path / "failed" / "metrics.jsonl")] == [1], "epoch 2 never finished"


def _failure(tmp_path: Path, rank: int, exitcode: int, record: dict | None):
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    path = tmp_path / f"error{len(list(tmp_path.iterdir()))}.json"  # a new file each: absent means no record
    if record is not None:
        path.write_text(json.dumps({"message": record["line"], "timestamp": int(record["time"]), "cvtrain": record}))
    return ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=exitcode, error_file=str(path))


def test_the_reported_failure_is_the_root_cause_not_a_peers_complaint(tmp_path):
    from cvtrain.engine.launcher import describe_failure

    peer = {"line": "a collective failed ...", "secondary": True, "time": 10.0}
    own = {"line": "dataset.root does not exist; ...", "secondary": False, "time": 11.0}
    failures = {0: _failure(tmp_path, 0, 1, peer), 1: _failure(tmp_path, 1, 2, own)}
    assert describe_failure(failures) == (own["line"], 2), "the later, own error is the cause"
    killed = {0: _failure(tmp_path, 0, 1, peer), 1: _failure(tmp_path, 1, -signal.SIGKILL, None)}
    line, code = describe_failure(killed)
    assert line.startswith("worker rank 1 was killed by SIGKILL") and "batch_size" in line and code == 137
    exited = {0: _failure(tmp_path, 0, 1, peer), 1: _failure(tmp_path, 1, 7, None)}
    assert describe_failure(exited) == ("worker rank 1 exited with status 7 without an error message; its output "
                                        "above says why", 7)
    assert describe_failure({0: _failure(tmp_path, 0, 1, peer)}) == (peer["line"], 1), "nothing better: the peer's"
    aborted = {0: _failure(tmp_path, 0, -signal.SIGTERM, None), 1: _failure(tmp_path, 1, -signal.SIGABRT, None)}
    line, code = describe_failure(aborted)
    assert line.startswith("worker rank 1 was killed by SIGABRT") and code == 128 + signal.SIGABRT, \
        "rank 0's SIGTERM came from the agent, after rank 1 aborted"


def test_several_nodes_need_a_rendezvous_endpoint(monkeypatch):
    from cvtrain.engine.launcher import rendezvous_endpoint
    from cvtrain.errors import UserError

    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(UserError, match="trainer.rdzv_endpoint=HOST:PORT"):
        rendezvous_endpoint(2, "")
    assert rendezvous_endpoint(2, "node0:29500") == "node0:29500"
    assert rendezvous_endpoint(1, "").startswith("127.0.0.1:")
    monkeypatch.setenv("MASTER_ADDR", "node7")
    monkeypatch.setenv("MASTER_PORT", "1234")
    assert rendezvous_endpoint(2, "") == "node7:1234"
    assert rendezvous_endpoint(1, "").startswith("127.0.0.1:"), "one node never meets another job's workers"
