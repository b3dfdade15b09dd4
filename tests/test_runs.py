"""Run folders through the real CLI: sweeps, SLURM requeues, resume, eval/predict folders,
the SLURM launcher config, max_steps with clipping, and EMA checkpoints."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_DATA, cli_in_process, read_jsonl, run_cli
from omegaconf import OmegaConf

from cvtrain.config.rundir import STAMP_ENV
from cvtrain.engine import checkpoint

# Under a second per run: 4 optimizer steps per epoch (128 / 32) on 32-pixel scenes, small
# val and test splits, no PNGs (the run-folder logic under test does not depend on them), and
# one torch thread (two threads on a busy 2-core machine make each step ~5x slower).
QUICK = ["task=classification", *SMALL_DATA, "dataset.image_size=32", "dataset.num_train=128", "dataset.num_val=32",
         "dataset.num_test=32", "dataset.batch_size=32", "trainer.progress=plain", "logger.images=false",
         "trainer.num_threads=1"]
STAMP = r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}"


def _clean_job_env(monkeypatch) -> None:
    """No job context leaks in from the shell that runs the tests (a SLURM allocation, torchrun)."""
    for name in list(os.environ):
        if name.startswith("SLURM_") or name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", STAMP_ENV):
            monkeypatch.delenv(name)


@contextlib.contextmanager
def _isolated():
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as monkeypatch:
        _clean_job_env(monkeypatch)
        try:
            yield monkeypatch
        finally:
            os.environ.pop(STAMP_ENV, None)  # cli_in_process fixes a stamp for this process; don't hand it on
            torch.set_num_threads(threads)  # trainer.num_threads=1 in process must not slow later tests


@pytest.fixture(autouse=True)
def clean_env():
    with _isolated():
        yield


def _ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    return result


def _epochs(run: Path) -> list[int]:
    return [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 1-epoch training run (in process), under OUT/classification/cnn/<stamp>."""
    out = tmp_path_factory.mktemp("trained") / "out"
    with _isolated():
        cli_in_process([*QUICK, "trainer.epochs=1", f"paths.output_dir={out}"])
    runs = list((out / "classification" / "cnn").iterdir())
    assert len(runs) == 1 and re.fullmatch(STAMP, runs[0].name), runs
    assert _epochs(runs[0]) == [1]
    return runs[0]


# --- a. multirun sweep ------------------------------------------------------------


@pytest.mark.slow
def test_local_multirun_sweep_gives_each_job_its_own_folder_and_config(tmp_path):
    out = tmp_path / "out"
    result = _ok(run_cli(["-m", "optimizer.lr=1e-3,1e-4", *QUICK, "trainer.epochs=1", f"paths.output_dir={out}"],
                         cwd=tmp_path, timeout=300))
    sweeps = list((out / "multirun" / "classification").iterdir())
    assert len(sweeps) == 1 and re.fullmatch(STAMP, sweeps[0].name), sweeps
    sweep = sweeps[0]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"], jobs
    for job, lr in (("0", 1e-3), ("1", 1e-4)):
        folder = sweep / job
        assert (folder / "checkpoints" / "last.pt").is_file(), job
        assert _epochs(folder) == [1], job
        saved = OmegaConf.load(folder / "config.yaml")
        assert saved.optimizer.lr == pytest.approx(lr), job
        assert checkpoint.load(folder / "checkpoints" / "last.pt")["config"]["optimizer"]["lr"] == pytest.approx(lr)
        assert f"run folder {folder}" in (folder / "train.log").read_text()
    assert not (out / "classification").exists(), "a sweep writes only under multirun/"
    assert not (tmp_path / "outputs").exists(), "paths.output_dir is where everything goes"
    assert result.stdout.count("training cnn") == 2


# --- b. SLURM requeue -------------------------------------------------------------


@pytest.mark.slow
def test_slurm_requeue_reuses_the_job_folder_and_resumes(tmp_path):
    out = tmp_path / "out"
    slurm = {"SLURM_JOB_ID": "4242"}
    first = _ok(run_cli([*QUICK, "trainer.epochs=1", f"paths.output_dir={out}"], cwd=tmp_path, env=slurm, timeout=300))
    folder = out / "classification" / "cnn" / "slurm-4242"
    assert (folder / "checkpoints" / "last.pt").is_file(), list((out / "classification" / "cnn").iterdir())
    assert "resumed from" not in first.stdout
    assert _epochs(folder) == [1]

    second = _ok(run_cli([*QUICK, "trainer.epochs=2", f"paths.output_dir={out}"], cwd=tmp_path, env=slurm, timeout=300))
    assert [p.name for p in (out / "classification" / "cnn").iterdir()] == ["slurm-4242"]
    assert "resumed from" in second.stdout
    assert "resumed from" in (folder / "train.log").read_text()
    records = read_jsonl(folder / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["step"] for r in records] == [4, 8], "the second run continues from step 4, not from 0"
    state = checkpoint.load(folder / "checkpoints" / "last.pt")
    assert (state["trainer"]["epoch"], state["trainer"]["step"]) == (2, 8)


def test_slurm_array_tasks_get_their_own_stamp(monkeypatch):
    from cvtrain.config.rundir import run_dir

    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert Path(run_dir("/base", "train", False)) == Path("/base/slurm-77-3")
    assert Path(run_dir("/base", "train", "false")) == Path("/base/slurm-77-3"), "stable within the job"


# --- c. resume=PATH ---------------------------------------------------------------


@pytest.mark.parametrize("target", ["folder", "last.pt"])
def test_resume_path_continues_that_run_folder(trained, tmp_path, target):
    run = tmp_path / "copied-run"
    shutil.copytree(trained, run)
    out = tmp_path / "out"
    resume = run if target == "folder" else run / "checkpoints" / "last.pt"
    cli_in_process([*QUICK, "trainer.epochs=2", f"paths.output_dir={out}", f"resume={resume}"])
    assert not out.exists(), "resuming writes into the given folder, never a new one"
    assert _epochs(run) == [1, 2]
    log = (run / "train.log").read_text()
    assert f"resumed from {run / 'checkpoints' / 'last.pt'} at epoch 1, step 4" in log
    assert checkpoint.load(run / "checkpoints" / "last.pt")["trainer"]["step"] == 8
    assert _epochs(trained) == [1], "the original run is untouched"


def test_requeue_of_a_finished_run_adds_no_duplicate_record(trained, tmp_path):
    """A SLURM job requeued after its last epoch (preempted while exiting) runs the same
    command again: it must find the run complete, not evaluate and record epoch 1 twice."""
    run = tmp_path / "finished"
    shutil.copytree(trained, run)
    cli_in_process([*QUICK, "trainer.epochs=1", f"resume={run}"])
    assert [(r["epoch"], r["step"]) for r in read_jsonl(run / "metrics.jsonl")] == [(1, 4)]


def test_resume_true_picks_the_latest_run_under_the_output_dir(trained, tmp_path):
    out = tmp_path / "out"
    base = out / "classification" / "cnn"
    older, newer = base / "2000-01-01_00-00-00", base / "2000-01-02_00-00-00"
    shutil.copytree(trained, older)
    shutil.copytree(trained, newer)
    os.utime(older / "checkpoints" / "last.pt", (1e9, 1e9))  # older by modification time
    cli_in_process([*QUICK, "trainer.epochs=2", f"paths.output_dir={out}", "resume=true"])
    assert _epochs(newer) == [1, 2]
    assert _epochs(older) == [1]
    assert sorted(p.name for p in base.iterdir()) == [older.name, newer.name]


def test_resume_of_a_folder_without_a_checkpoint_is_a_one_line_error(tmp_path, capsys):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        cli_in_process([*QUICK, f"paths.output_dir={tmp_path / 'out'}", f"resume={empty}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cvtrain: error:") and "checkpoints/last.pt" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


# --- d. SLURM launcher config -----------------------------------------------------

SUBMITIT_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def test_slurm_launcher_config_composes_with_our_settings(tmp_path):
    result = _ok(run_cli(["hydra/launcher=slurm", "--cfg", "hydra"], cwd=tmp_path, timeout=120))
    launcher = OmegaConf.create(result.stdout).hydra.launcher
    assert launcher._target_ == SUBMITIT_TARGET
    assert launcher.timeout_min == 240
    assert launcher.max_num_timeout == 3, "requeue on timeout: the job resumes from last.pt"
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node, launcher.cpus_per_task) == (1, 1, 1, 8)
    assert launcher.mem_gb == 32
    assert f"_target_: {SUBMITIT_TARGET}" in result.stdout and "timeout_min: 240" in result.stdout
    assert list(tmp_path.iterdir()) == [], "printing the config runs and submits nothing"


def test_plugin_slurm_launcher_composes_too(tmp_path):
    result = _ok(run_cli(["hydra/launcher=submitit_slurm", "--cfg", "hydra"], cwd=tmp_path, timeout=120))
    launcher = OmegaConf.create(result.stdout).hydra.launcher
    assert launcher._target_ == SUBMITIT_TARGET
    assert list(tmp_path.iterdir()) == []


# --- e. eval and predict folders --------------------------------------------------


def test_eval_and_predict_write_to_their_own_folders(trained, tmp_path):
    from PIL import Image

    out = trained.parent.parent.parent  # the paths.output_dir of the training run
    base = trained.parent
    before = {p.relative_to(trained): p.stat().st_mtime_ns for p in trained.rglob("*") if p.is_file()}
    best = trained / "checkpoints" / "best.pt"

    cli_in_process([*QUICK, "mode=eval", f"ckpt={best}", f"paths.output_dir={out}"])
    os.environ.pop(STAMP_ENV, None)
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photos / f"img{i}.png")
    cli_in_process([*QUICK, "mode=predict", f"ckpt={best}", f"input={photos}", f"paths.output_dir={out}"])

    names = sorted(p.name for p in base.iterdir())
    evals = [n for n in names if re.fullmatch(f"eval-{STAMP}", n)]
    predicts = [n for n in names if re.fullmatch(f"predict-{STAMP}", n)]
    assert len(evals) == 1 and len(predicts) == 1, f"expected eval-<stamp> and predict-<stamp> in {base}, got {names}"
    assert len(names) == 3, names

    result = json.loads((base / evals[0] / "eval.json").read_text())
    assert result["split"] == "test" and 0 <= result["acc1"] <= 1
    assert (base / evals[0] / "config.yaml").is_file() and (base / evals[0] / "train.log").is_file()
    assert len(read_jsonl(base / predicts[0] / "predictions.jsonl")) == 3

    after = {p.relative_to(trained): p.stat().st_mtime_ns for p in trained.rglob("*") if p.is_file()}
    assert after == before, "eval and predict must leave the training run's folder alone"


# --- f. max_steps, clipping, EMA --------------------------------------------------


def test_max_steps_with_gradient_clipping_stops_after_exactly_that_many_steps(tmp_path, monkeypatch):
    original = torch.nn.utils.clip_grad_norm_
    clipped = []

    def recording_clip(params, max_norm, *args, **kwargs):
        params = list(params)
        total = original(params, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params if p.grad is not None]))
        clipped.append((float(max_norm), float(total), float(after)))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    run = tmp_path / "run"
    cli_in_process([*QUICK, "trainer.epochs=10", "trainer.max_steps=5", "trainer.clip_grad_norm=0.5",
                    f"hydra.run.dir={run}"])
    records = read_jsonl(run / "metrics.jsonl")
    assert records[-1]["step"] == 5
    assert [r["step"] for r in records] == [4, 5], "one evaluation per epoch, and one when max_steps ends the run"
    assert checkpoint.load(run / "checkpoints" / "last.pt")["trainer"]["step"] == 5
    assert len(clipped) == 5, "clipping happens once per optimizer step"
    for max_norm, total, after in clipped:
        assert max_norm == 0.5
        assert after <= 0.5 * (1 + 1e-4) + 1e-6, (total, after)
    assert any(total > 0.5 for _, total, _ in clipped), "the test should exercise actual clipping"


def test_ema_run_saves_the_averaged_weights(tmp_path):
    run = tmp_path / "run"
    cli_in_process([*QUICK, "trainer.epochs=1", "trainer.ema_decay=0.9", f"hydra.run.dir={run}"])
    assert _epochs(run) == [1]
    for name in ("last.pt", "best.pt"):
        state = checkpoint.load(run / "checkpoints" / name)
        assert set(state["ema"]) == {"model"}, name
        ema = state["ema"]["model"]
        assert int(ema["n_averaged"]) == 4, "one EMA update per optimizer step"
        model = state["models"]["model"]
        differs = [k for k, v in model.items() if v.is_floating_point() and not torch.equal(v, ema[f"module.{k}"])]
        assert differs, "after a few steps the average lags the live weights"
