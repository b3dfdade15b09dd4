"""A user's own config folder (`--config-dir DIR`, `hydra.searchpath=[file://DIR]`): its
models, data sets and experiments are listed, checked and trained like cvtrain's own."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import run_cli

from cvtrain.config.groups import USER_DIRS_ENV, accepted, options, use_config_dirs
from cvtrain.config.help import render_help
from cvtrain.config.overrides import check_overrides
from cvtrain.errors import UserError

FILES = {
    "model/my_net.yaml": """\
        # My own small classifier: pooled pixels through one hidden layer.
        defaults:
          - _classifier
          - _self_

        name: my_net
        module: my_models
        width: 32
        """,
    "my_models.py": """\
        import torch.nn as nn

        from cvtrain.registry import MODELS


        @MODELS.register("my_net", family="classifier")
        def my_net(cfg, *, num_classes, in_channels):
            return nn.Sequential(nn.AdaptiveAvgPool2d(8), nn.Flatten(), nn.Linear(in_channels * 64, cfg.width),
                                 nn.ReLU(), nn.Linear(cfg.width, num_classes))
        """,
    "dataset/my_digits.yaml": """\
        # The digits again, under my own name and builder.
        defaults:
          - _image_classes
          - _self_

        name: my_digits
        tasks: [classification, my_task]
        module: my_data
        image_size: 16
        val_fraction: 0.2
        """,
    "my_data.py": """\
        from cvtrain.registry import DATASETS


        @DATASETS.register("my_digits", family="classification")
        def my_digits(cfg, split):
            return DATASETS.get("digits", ("classification",))(cfg, split)
        """,
    "task/my_task.yaml": """\
        # @package _global_
        # My own task: classification with my data set (its module registers the class).
        defaults:
          - _classification@task
          - override /model: my_net
          - override /dataset: my_digits

        task:
          name: my_task
          module: my_tasks
          families: [classifier]
          monitor: acc1
          metrics: [accuracy]
        """,
    "my_tasks.py": """\
        from cvtrain.registry import TASKS
        from cvtrain.tasks.classification import ClassificationTask


        @TASKS.register("my_task")
        class MyTask(ClassificationTask):
            name = "my_task"
        """,
    "experiment/my_quick.yaml": """\
        # @package _global_
        # My net on my digits for one short epoch.
        defaults:
          - override /task: classification
          - override /model: my_net
          - override /dataset: my_digits

        trainer:
          epochs: 1
        """,
}
QUIET = ["trainer.progress=none", "logger.images=false", "trainer.num_threads=1"]


@pytest.fixture()
def myconf(tmp_path) -> Path:
    folder = tmp_path / "myconf"
    for name, text in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text))
    yield folder
    use_config_dirs([])  # what the pre-check searches is this process's: leave it as found


def test_the_pre_check_accepts_the_folders_options_and_refuses_them_without_it(myconf):
    use_config_dirs([str(myconf)])
    check_overrides(["model=my_net", "task=classification", "dataset=my_digits"])
    check_overrides(["experiment=my_quick"])
    assert "my_net" in accepted("classification", "model") and "my_digits" in accepted("classification", "dataset")
    with pytest.raises(UserError, match="task=detection cannot train model=my_net .a classifier model."):
        check_overrides(["task=detection", "model=my_net"])
    with pytest.raises(UserError, match=r"cannot use dataset=my_digits \(a dataset for classification, my_task\)"):
        check_overrides(["task=segmentation", "dataset=my_digits"])
    check_overrides(["task=my_task", "dataset=my_digits"])
    with pytest.raises(UserError, match=r"task=my_task cannot use dataset=digits .*pick one of: my_digits\."):
        check_overrides(["task=my_task", "dataset=digits"])
    with pytest.raises(UserError, match=r"unknown experiment 'my_quik'. Did you mean 'my_quick'\?"):
        check_overrides(["experiment=my_quik"])
    use_config_dirs([], [str(myconf)])  # hydra.searchpath: after cvtrain's folder, found all the same
    assert "my_net" in options("model") and "my_quick" in options("experiment")
    use_config_dirs([])
    with pytest.raises(UserError, match="unknown model 'my_net'"):
        check_overrides(["model=my_net"])


def test_help_lists_the_folders_options_without_importing_torch(myconf):
    code = (
        "import sys, io, contextlib; from cvtrain.cli import main\n"
        "buf = io.StringIO()\n"
        f"with contextlib.redirect_stdout(buf): main(['--config-dir', {str(myconf)!r}, '--help'])\n"
        "assert 'torch' not in sys.modules, 'help imported torch'\n"
        "print(buf.getvalue())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=myconf.parent)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:1] == ["my_net"] and "My own small classifier" in line for line in lines)
    assert any(line.split()[:1] == ["my_digits"] for line in lines)
    assert any(line.split()[:1] == ["my_quick"] and "one short epoch" in line for line in lines)
    assert any(line.split()[:1] == ["my_task"] and "My own task" in line for line in lines)
    assert str(myconf) in result.stdout, "the help says which folders it searched"
    use_config_dirs([], [str(myconf)])
    task_help = render_help("classification")
    assert "    my_net " in task_help and "    my_digits " in task_help
    assert "    my_net " not in render_help("detection")


def test_a_user_model_trains_from_the_config_folder_and_writes_checkpoints(myconf, tmp_path):
    run = tmp_path / "run"
    result = run_cli(["--config-dir", str(myconf), "model=my_net", "task=classification", "dataset=digits",
                      "trainer.epochs=1", "dataset.image_size=16", *QUIET, f"hydra.run.dir={run}"],
                     cwd=tmp_path, timeout=300, env={USER_DIRS_ENV: ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "checkpoints" / "last.pt").is_file()
    assert "training my_net" in result.stderr + result.stdout
    assert "module: my_models" in (run / "config.yaml").read_text(), "the saved config names the module again"


def test_an_experiment_and_data_set_of_the_searchpath_train_too(myconf, tmp_path):
    run = tmp_path / "run"
    result = run_cli([f"hydra.searchpath=[file://{myconf}]", "experiment=my_quick", *QUIET, f"hydra.run.dir={run}"],
                     cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = (run / "config.yaml").read_text()
    assert "name: my_digits" in saved and "name: my_net" in saved and "val_fraction: 0.2" in saved
    assert (run / "checkpoints" / "best.pt").is_file()


def test_a_user_task_trains_with_its_own_module(myconf, tmp_path):
    run = tmp_path / "run"
    result = run_cli(["--config-dir", str(myconf), "task=my_task", "trainer.epochs=1", *QUIET, f"hydra.run.dir={run}"],
                     cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "checkpoints" / "best.pt").is_file() and "acc1" in (run / "metrics.jsonl").read_text()
    assert "name: my_task" in (run / "config.yaml").read_text()


def test_a_missing_user_module_is_one_line_naming_it_and_the_fix(myconf, tmp_path):
    result = run_cli(["--config-dir", str(myconf), "model=my_net", "model.module=my_modls", "dataset=digits",
                      *QUIET, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cvtrain: error: model.module=my_modls: no module 'my_modls' in ")
    assert str(myconf) in lines[0] and "put my_modls.py in the config folder" in lines[0]


def test_a_config_folder_that_does_not_exist_is_one_line(tmp_path):
    result = run_cli(["--config-dir", str(tmp_path / "nope"), "--help"], cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (f"cvtrain: error: config folder '{tmp_path / 'nope'}' does not exist; pass "
                                     "--config-dir DIR of a folder holding model/, dataset/, experiment/ ... YAML files.")
