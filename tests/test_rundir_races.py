"""Run folders under concurrency and failure: runs started in the same second each get
a folder of their own (created with an exclusive mkdir), and a run that fails before
training removes the folder it created, never a resumed run's or one holding results."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_in_process, read_jsonl, run_cli
from omegaconf import OmegaConf

from cvtrain.config import rundir
from cvtrain.config.rundir import STAMP_ENV

STAMP = "2030-01-01_00-00-00"
STAMP_FORMAT = "%Y-%m-%d_%H-%M-%S"
# One optimizer step on a few 32-pixel scenes, one torch thread, no PNGs: the folder
# logic under test does not depend on how much is trained.
TINY = ["task=classification", "dataset.image_size=32", "dataset.num_train=32", "dataset.num_val=16",
        "dataset.num_test=16", "dataset.batch_size=16", "trainer.epochs=1", "trainer.max_steps=1",
        "trainer.progress=plain", "logger.images=false", "trainer.num_threads=1"]
# `cvtrain ARGS` with the clock pinned to one second, so that every run races for the same
# stamp however slowly the processes start on a busy machine.
PINNED_CLOCK_CVTRAIN = f"""
import sys, time
_strftime = time.strftime
time.strftime = lambda fmt, *at: {STAMP!r} if fmt == {STAMP_FORMAT!r} and not at else _strftime(fmt, *at)
from cvtrain.cli import main
main(sys.argv[1:])
"""


def _job_free_env() -> dict:
    """This environment without a run stamp, a SLURM allocation or torchrun's variables."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("SLURM_") and k not in (STAMP_ENV, "RANK", "WORLD_SIZE", "LOCAL_RANK")}


@pytest.fixture
def clean_env(monkeypatch):
    """In-process runs: no job context from the shell, and no stamp handed to later tests."""
    for name in os.environ.keys() - _job_free_env().keys():
        monkeypatch.delenv(name)
    monkeypatch.setattr(time, "strftime", _pinned_strftime(time.strftime))
    yield monkeypatch
    os.environ.pop(STAMP_ENV, None)


def _pinned_strftime(original):
    return lambda fmt, *at: STAMP if fmt == STAMP_FORMAT and not at else original(fmt, *at)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _processes_mentioning(marker: str) -> list[int]:
    """PIDs whose command line holds `marker` (a worker left behind would still hold it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue  # exited while we looked
    return found


# --- a. eight real runs started in one second ------------------------------------


@pytest.mark.slow
def test_eight_runs_started_in_one_second_get_eight_folders(tmp_path):
    out = tmp_path / "out"
    env = dict(_job_free_env(), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")  # eight runs share two cores
    procs = [subprocess.Popen([sys.executable, "-c", PINNED_CLOCK_CVTRAIN, *TINY, f"seed={i}",
                               f"paths.output_dir={out}"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(8)]
    try:
        outputs = [proc.communicate(timeout=240)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, f"exit {proc.returncode}\n{output[-3000:]}"
    assert not [p.pid for p in procs if _alive(p.pid)], "every run has exited"
    assert _processes_mentioning(str(out)) == [], "no run left a worker behind"

    base = out / "classification" / "cnn"
    names = sorted(p.name for p in base.iterdir())
    assert names == sorted([STAMP] + [f"{STAMP}_{n}" for n in range(2, 9)]), names
    seeds = []
    for name in names:
        folder = base / name
        seeds.append(OmegaConf.load(folder / "config.yaml").seed)
        assert (folder / "checkpoints" / "last.pt").is_file(), name
        assert len(read_jsonl(folder / "metrics.jsonl")) == 1, f"{name}: one run's evaluation, not two runs'"
        log = (folder / "train.log").read_text()
        assert log.count("run folder ") == 1 and f"run folder {folder}" in log, log
    assert sorted(seeds) == list(range(8)), "each folder holds the config of a different run"


# --- b. the exclusive create, raced by many processes ------------------------------


def _claim_folder(base: str, mode: str, start, results) -> None:
    """One racing process: pin the clock, wait for all the others, then pick a folder."""
    os.environ.pop(STAMP_ENV, None)
    os.environ.pop("SLURM_JOB_ID", None)
    time.strftime = _pinned_strftime(time.strftime)
    start.wait()
    folder = rundir.run_dir(base, mode, False)
    results.put((folder, rundir.created_here(folder), os.environ[STAMP_ENV]))


@pytest.mark.parametrize("mode,prefix", [("train", ""), ("eval", "eval-")])
def test_processes_racing_for_one_stamp_each_create_their_own_folder(tmp_path, mode, prefix):
    racers = 12
    ctx = multiprocessing.get_context("forkserver")
    start, results = ctx.Barrier(racers), ctx.Queue()
    base = tmp_path / "out" / "classification" / "cnn"
    procs = [ctx.Process(target=_claim_folder, args=(str(base), mode, start, results)) for _ in range(racers)]
    for proc in procs:
        proc.start()
    try:
        claims = [results.get(timeout=60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    assert [p.exitcode for p in procs] == [0] * racers
    expected = {f"{prefix}{STAMP}"} | {f"{prefix}{STAMP}_{n}" for n in range(2, racers + 1)}
    folders = [Path(folder) for folder, _, _ in claims]
    assert {f.name for f in folders} == expected, "twelve distinct folders, the suffixes in order"
    assert sorted(p.name for p in base.iterdir()) == sorted(expected), "each one really created"
    for folder, created, stamp in claims:
        assert created, f"{folder}: the process that made it knows"
        assert Path(folder).name == f"{prefix}{stamp}", "the stamp handed to workers names that folder"


def test_the_folder_is_resolved_once_per_run_and_kept_by_its_stamp(tmp_path, clean_env):
    first = rundir.run_dir(str(tmp_path), "train", False)
    assert Path(first).is_dir() and rundir.created_here(first)
    assert rundir.run_dir(str(tmp_path), "train", False) == first, "Hydra may resolve it again: same folder"
    (tmp_path / f"{STAMP}_2").write_text("a file, not a folder: still taken")
    clean_env.delenv(STAMP_ENV)  # as in another process started in the same second
    assert Path(rundir.run_dir(str(tmp_path), "train", False)).name == f"{STAMP}_3"


def test_inherited_slurm_and_resumed_folders_are_not_created_here(tmp_path, clean_env):
    clean_env.setenv(STAMP_ENV, "from-the-launcher")
    inherited = Path(rundir.run_dir(str(tmp_path), "train", False))
    inherited.mkdir()  # by the launcher that made the stamp
    assert not rundir.created_here(inherited), "a worker's stamp"
    assert not rundir.discard_if_unused(inherited) and inherited.is_dir(), "its launcher's to remove, not ours"
    clean_env.delenv(STAMP_ENV)
    clean_env.setenv("SLURM_JOB_ID", "4242")
    slurm = rundir.run_dir(str(tmp_path), "train", False)
    assert Path(slurm).name == "slurm-4242" and not Path(slurm).exists(), "a requeue reuses it: Hydra creates it"
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    (tmp_path / "old" / "checkpoints" / "last.pt").write_bytes(b"x")
    resumed = rundir.run_dir(str(tmp_path), "train", str(tmp_path / "old"))
    assert not rundir.created_here(resumed)
    assert not rundir.discard_if_unused(resumed) and Path(resumed, "checkpoints", "last.pt").is_file()


def test_discard_keeps_results_and_the_parents_other_runs_use(tmp_path, clean_env):
    base = tmp_path / "new" / "classification" / "cnn"
    kept = Path(rundir.run_dir(str(base), "train", False))
    (kept / "metrics.jsonl").write_text("{}\n")
    clean_env.delenv(STAMP_ENV)
    failed = Path(rundir.run_dir(str(base), "train", False))
    (failed / "config.yaml").write_text("seed: 1\n")
    assert not rundir.discard_if_unused(kept), "a folder with metrics is kept"
    assert rundir.discard_if_unused(failed)
    assert [p.name for p in base.iterdir()] == [kept.name], "only the failed run's folder goes"
    assert not rundir.discard_if_unused(failed), "and only once"


def test_a_failed_first_run_leaves_no_empty_parent_folders(tmp_path, clean_env):
    failed = rundir.run_dir(str(tmp_path / "outputs" / "classification" / "cnn"), "eval", False)
    assert Path(failed).name == f"eval-{STAMP}"
    assert rundir.discard_if_unused(failed)
    assert list(tmp_path.iterdir()) == [], "outputs/classification/cnn were made for it: gone too"


# --- c. an error before training leaves no folder ---------------------------------


def test_a_missing_dataset_exits_2_with_one_line_and_leaves_no_folder(tmp_path):
    out = tmp_path / "out"
    result = run_cli([*TINY, "dataset=image_folder", "dataset.root=/nonexistent", f"paths.output_dir={out}"],
                     cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cvtrain: error: ") and "/nonexistent" in lines[0], lines
    assert not out.exists(), list(out.rglob("*"))
    assert list(tmp_path.iterdir()) == [], "nothing in the working folder either"


@pytest.mark.parametrize("args,expected", [
    (["dataset=image_folder", "dataset.root=/nonexistent"], "/nonexistent"),  # a UserError building the task
    (["mode=eval", "ckpt=/no/such/best.pt"], "/no/such/best.pt"),
    (["dataset=image_folder"], "dataset.root is required"),  # before execute, in run
], ids=["dataset", "eval-ckpt", "missing-value"])
def test_an_error_before_training_removes_only_its_own_folder(tmp_path, clean_env, capsys, args, expected):
    import logging

    base = tmp_path / "out" / "classification" / "cnn"
    earlier = base / "2000-01-01_00-00-00"
    earlier.mkdir(parents=True)
    (earlier / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(SystemExit) as exit_info:
        cli_in_process([*TINY, *args, f"paths.output_dir={tmp_path / 'out'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert [p.name for p in base.iterdir()] == [earlier.name], "the failed run's folder is gone, the other kept"
    open_logs = [h.baseFilename for h in logging.getLogger("cvtrain").handlers if hasattr(h, "baseFilename")]
    assert not [f for f in open_logs if str(tmp_path) in f], "train.log of the removed folder was closed"


def test_a_failure_after_checkpoints_were_written_keeps_the_folder(tmp_path, clean_env, monkeypatch):
    import cvtrain.app

    def fail(*args):
        raise RuntimeError("a bug after training")

    monkeypatch.setattr(cvtrain.app, "_summary", fail)
    with pytest.raises(RuntimeError, match="a bug after training"):
        cli_in_process([*TINY, f"paths.output_dir={tmp_path / 'out'}"])
    folder = tmp_path / "out" / "classification" / "cnn" / STAMP
    assert (folder / "checkpoints" / "last.pt").is_file() and (folder / "metrics.jsonl").is_file()


# --- d. a resumed run's folder is never removed -----------------------------------


def test_an_error_while_resuming_never_removes_the_resumed_folder(tmp_path, clean_env, capsys):
    run = tmp_path / "out" / "classification" / "cnn" / "2000-01-01_00-00-00"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"the weights")
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    for resume in ("true", str(run)):
        with pytest.raises(SystemExit) as exit_info:
            cli_in_process([*TINY, "dataset=image_folder", "dataset.root=/nonexistent",
                            f"paths.output_dir={tmp_path / 'out'}", f"resume={resume}"])
        assert exit_info.value.code == 2, capsys.readouterr().err
        assert (run / "checkpoints" / "last.pt").read_bytes() == b"the weights", resume
        assert read_jsonl(run / "metrics.jsonl") == [{"epoch": 1}], resume
        assert [p.name for p in run.parent.iterdir()] == [run.name], "and no new folder beside it"
