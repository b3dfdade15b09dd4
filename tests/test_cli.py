"""The command as users meet it: help, start-up time, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import SMALL_DATA, run_cli


def test_help_lists_groups_without_importing_torch(tmp_path):
    code = (
        "import sys, io, contextlib; from cvtrain.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf): main(['--help'])\n"
        "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules, 'help imported torch'\n"
        "print(buf.getvalue())"
    )
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    for expected in ("task:", "classification", "model:", "resnet18", "dataset:", "digits", "optimizer:", "trainer:"):
        assert expected in result.stdout
    assert elapsed < 5, f"--help took {elapsed:.1f}s"


def test_config_errors_do_not_import_torch(tmp_path):
    code = (
        "import sys; from cvtrain.cli import main\n"
        "try:\n    main(['trainer.epocs=3'])\nexcept SystemExit as e:\n    code = e.code\n"
        "assert code == 2, code\n"
        "assert 'torch' not in sys.modules, 'a config error imported torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "unknown config key 'trainer.epocs'" in result.stderr


# (command-line arguments, what the one-line message must say)
BAD_INPUT = [
    (["model=resnt18"], "unknown model 'resnt18'. Did you mean 'resnet18'?"),
    (["task=classification", "task.coco_backend=x"], "unknown config key 'task.coco_backend'. Valid keys of task: augment"),
    (["experiment=detection_fcoss"], "unknown experiment 'detection_fcoss'. Did you mean 'detection_fcos'?"),
    (["task=clasification"], "Did you mean 'classification'?"),
    (["trainer.epocs=3"], "unknown config key 'trainer.epocs'. Did you mean 'trainer.epochs'?"),
    (["trainer.epochs=abc"], "trainer.epochs: Value 'abc' of type 'str' could not be converted to Integer. Pass an integer."),
    (["mode=tran"], "expected one of [train, eval, predict]"),
    (["task=retrieval", "dataset.captions=terse"], "dataset.captions: Invalid value 'terse', expected one of [varied, detailed]"),
    (["dataset=image_folder"], "dataset.root is required but not set"),
    (["dataset=mnist", "dataset.root=/no/such/mnist"], "/no/such/mnist"),
    (["dataset=image_folder", "dataset.root=/no/such/folder"], "/no/such/folder"),
    (["model=resnet18", "model.weights=/no/such/resnet18.pth"], "model.weights: no such file '/no/such/resnet18.pth'"),
    (["model.family=detector"], "task=classification cannot train model=cnn (a detector model); pick one of: cnn"),
    (["model=gru"], "task=classification cannot train model=gru (a recurrent model); pick one of: cnn, mobilenet"),
    (["task=captioning", "model=resnet18"], "cannot train model=resnet18 (a classifier model); pick one of: gru, lstm, rnn"),
    (["task=language_modeling", "dataset=text"], "dataset.root is required but not set; pass dataset.root=PATH"),
    (["task=language_modeling", "mode=predict", "prompt=?!"], "cannot parse the override 'prompt=?!'; quote a value"),
    (["mode=eval"], "mode=eval needs a checkpoint: add ckpt=PATH"),
    (["mode=eval", "ckpt=/no/such/best.pt"], "checkpoint '/no/such/best.pt' does not exist"),
    (["resume=true"], "resume=true: no earlier run with checkpoints/last.pt"),
    (["hydra/launcher=slurmm"], "unknown launcher 'slurmm'. Did you mean 'slurm'?"),
]


@pytest.mark.parametrize("args,expected", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_gives_one_line_a_fix_and_a_nonzero_exit(tmp_path, args, expected):
    result = run_cli([*args, f"paths.output_dir={tmp_path / 'out'}", *SMALL_DATA], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cvtrain: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_a_corrupt_checkpoint_is_refused_and_left_alone(tmp_path):
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"\x80\x04garbage that is not a checkpoint")
    before = bad.read_bytes()
    result = run_cli(["mode=eval", f"ckpt={bad}", f"paths.output_dir={tmp_path / 'out'}"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "is corrupt or truncated" in result.stderr
    assert bad.read_bytes() == before, "a refused checkpoint must not be touched"


def test_debug_flag_shows_the_traceback(tmp_path):
    result = run_cli(["--debug", "model=resnet18", "model.weights=/no/such.pth", *SMALL_DATA,
                      f"paths.output_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "UserError" in result.stderr


def test_ckpt_may_name_several_checkpoints_the_first_is_primary(tmp_path, monkeypatch):
    """A task that needs several checkpoints (a diffusion cascade) gets every one, by name;
    the run is evaluated with the primary's config and weights, as with one path."""
    import json

    import torch
    from conftest import cli_in_process

    import cvtrain.app as app

    threads = torch.get_num_threads()
    quick = ["task=classification", "dataset.image_size=32", "dataset.num_train=64", "dataset.num_val=32",
             "dataset.num_test=32", "dataset.batch_size=32", "trainer.epochs=1", "trainer.progress=none",
             "logger.images=false", "trainer.num_threads=1"]
    try:
        cli_in_process([*quick, f"hydra.run.dir={tmp_path / 'a'}"])
        cli_in_process([*quick, "model.width=8", f"hydra.run.dir={tmp_path / 'b'}"])
        seen = {}
        evaluate = app._evaluate

        def spy(trainer, task, cfg, run_dir, is_main):
            seen.update(task.checkpoints)
            return evaluate(trainer, task, cfg, run_dir, is_main)

        monkeypatch.setattr(app, "_evaluate", spy)
        a, b = tmp_path / "a" / "checkpoints" / "best.pt", tmp_path / "b" / "checkpoints" / "best.pt"
        cli_in_process(["mode=eval", "split=val", f"ckpt={{base: {a}, upsampler: {b}}}", f"hydra.run.dir={tmp_path / 'e'}"])
        assert list(seen) == ["base", "upsampler"]
        assert seen["base"]["config"]["model"]["width"] == 16 and seen["upsampler"]["config"]["model"]["width"] == 8
        report = json.loads((tmp_path / "e" / "eval.json").read_text())
        assert report["ckpt"] == {"base": str(a), "upsampler": str(b)} and 0.0 <= report["acc1"] <= 1.0
        saved = (tmp_path / "e" / "config.yaml").read_text()
        assert "width: 16" in saved, "the primary's config is the run's"
        seen.clear()
        cli_in_process(["mode=eval", "split=val", f"ckpt={a}", f"hydra.run.dir={tmp_path / 'one'}"])
        assert list(seen) == ["main"] and json.loads((tmp_path / "one" / "eval.json").read_text())["ckpt"] == str(a)
    finally:
        torch.set_num_threads(threads)
