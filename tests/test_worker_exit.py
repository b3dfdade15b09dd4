"""A worker leaves through os._exit (no interpreter teardown, where gloo aborted), yet
with the status, output and traceback it would have had."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = """
import sys
from cvtrain.worker_exit import run_then_exit

def body():
    print("saved", end="")  # unflushed: must still appear
    sys.stderr.write("said ")
    {action}

run_then_exit(body)
print("never reached")
"""


@pytest.mark.parametrize("action, status", [("pass", 0), ("sys.exit(3)", 3), ("sys.exit('a message')", 1),
                                            ("raise ValueError('bug')", 1)])
def test_the_worker_exits_with_its_status_and_its_output(action, status):
    done = subprocess.run([sys.executable, "-c", PROGRAM.format(action=action)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == status, done.stderr
    assert done.stdout == "saved", "output flushed, nothing after the exit"
    assert done.stderr.startswith("said")
    if "message" in action:
        assert "a message" in done.stderr
    if "raise" in action:
        assert "Traceback" in done.stderr and "ValueError: bug" in done.stderr


def test_a_worker_knows_it_is_one_of_several(monkeypatch):
    from cvtrain.worker_exit import in_distributed_job

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert not in_distributed_job()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert in_distributed_job()
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert in_distributed_job()
