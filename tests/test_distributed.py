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
