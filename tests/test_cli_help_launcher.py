"""`cvtrain task=X --help` lists what task X accepts; a sweep launcher that cannot start
(`hydra/launcher=slurm` without SLURM) fails in one line."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from conftest import run_cli

from cvtrain.config.groups import declared_tasks, options, task_defaults, uses_loss
from cvtrain.config.overrides import check_overrides
from cvtrain.errors import UserError

HEADER = re.compile(r"^  (?P<group>[\w/]+)(?: \([^)]*\))?:(?P<rest>.*)$")
OPTION = re.compile(r"^  (?P<mark>[* ]) (?P<option>\w+)")


def _help(args: list[str]) -> str:
    """`cvtrain ARGS --help` run in a fresh interpreter, which must not import torch."""
    code = (
        "import sys, io, contextlib; from cvtrain.cli import main\n"
        "buf = io.StringIO()\n"
        f"with contextlib.redirect_stdout(buf): main({[*args, '--help']!r})\n"
        "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules, 'help imported torch'\n"
        "print(buf.getvalue())"
    )
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 5, f"--help took {elapsed:.1f}s"
    return result.stdout


def _sections(text: str) -> dict[str, tuple[list[str], str, str]]:
    """The task help's groups: (options listed, the default marked with *, header text)."""
    sections: dict[str, tuple[list[str], str, str]] = {}
    group = None
    for line in text[text.index("What task="):].splitlines()[1:]:
        header, option = HEADER.match(line), OPTION.match(line)
        if header:
            group = header["group"]
            sections[group] = ([], "", header["rest"].strip())
        elif option and group:
            listed, default, rest = sections[group]
            listed.append(option["option"])
            sections[group] = (listed, option["option"] if option["mark"] == "*" else default, rest)
    return sections


def _check_accepts(task: str, group: str, option: str) -> bool:
    try:
        check_overrides([f"task={task}", f"{group}={option}"])
    except UserError:
        return False
    return True


def test_detection_help_lists_detectors_and_their_data_sets():
    text = _help(["task=detection"])
    sections = _sections(text)
    models, default_model, _ = sections["model"]
    assert sorted(models) == ["faster_rcnn", "fcos", "retinanet", "ssd"]
    assert default_model == "faster_rcnn"
    assert "gru" not in text and "resnet18" not in text and "unet" not in text
    datasets, default_dataset, _ = sections["dataset"]
    assert sorted(datasets) == ["coco", "shapes", "voc"] and default_dataset == "shapes"
    assert sections["loss"][0] == [] and "computes its own loss" in sections["loss"][2]
    assert sections["optimizer"][1] == "sgd", "the task's own default optimizer is marked"
    assert "task=detection: Object detection" in text


def test_captioning_help_lists_recurrent_models_and_caption_data_sets():
    sections = _sections(_help(["task=captioning", "model=lstm"]))
    assert sections["model"][:2] == (["gru", "lstm", "rnn"], "gru")
    assert sections["dataset"][:2] == (["coco_captions", "karpathy", "shapes"], "shapes")
    assert not {"digits", "voc", "coco", "text"} & set(sections["dataset"][0])


@pytest.mark.parametrize("task", options("task"))
def test_help_lists_exactly_what_the_task_accepts(task):
    from cvtrain.config.help import render_help

    sections = _sections(render_help(task))
    defaults = task_defaults(task)
    for group in ("model", "dataset", "loss", "optimizer", "scheduler"):
        listed, default, _ = sections[group]
        accepted = [o for o in options(group) if _check_accepts(task, group, o)]
        if group == "loss" and not uses_loss(task):
            assert listed == [] and accepted == [defaults["loss"]], "only the ignored default passes"
            continue
        assert listed == accepted, f"task={task} {group}: help lists {listed}, the check accepts {accepted}"
        assert default == defaults[group] and default in accepted


def test_the_yaml_declarations_match_the_builders_the_tasks_look_up():
    """What --help and the up-front check read (each data set and loss file's `tasks:`, no
    torch) is what the registries hold: a file feeds a task exactly when a builder of that
    name is registered for it."""
    from cvtrain.registry import DATASETS, LOSSES, TASKS

    assert sorted(TASKS.names()) == options("task")
    assert all(declared_tasks("dataset", d) for d in options("dataset")), "every data set feeds some task"
    for task in options("task"):
        assert DATASETS.names((task,)) == [d for d in options("dataset") if task in declared_tasks("dataset", d)], task
        assert LOSSES.names((task,)) == [x for x in options("loss") if task in declared_tasks("loss", x)], task
    for group in ("dataset", "loss"):
        for option in options(group):
            assert set(declared_tasks(group, option)) <= set(options("task")), (group, option)


def test_a_data_set_or_loss_the_task_cannot_use_is_refused_in_one_line(tmp_path):
    result = run_cli(["task=detection", "dataset=digits"], cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "cvtrain: error: task=detection cannot use dataset=digits (a dataset for classification, gan, diffusion, clip); "
        "pick one of: coco, shapes, voc."
    )
    with pytest.raises(UserError, match="computes its own loss, so loss=ce_dice would be ignored"):
        check_overrides(["task=captioning", "loss=ce_dice"])
    with pytest.raises(UserError, match="cannot use loss=ce_dice .*pick one of: cross_entropy"):
        check_overrides(["task=segmentation,classification", "loss=ce_dice"])  # every task of a sweep
    check_overrides(["mode=eval", "ckpt=x.pt", "dataset=voc"])  # the checkpoint's task decides


def test_unknown_task_help_is_one_line_and_exit_2(tmp_path):
    result = run_cli(["task=nope", "--help"], cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cvtrain: error: unknown task 'nope'."), result.stderr
    assert "Valid: captioning, classification, clip, colorization, detection" in lines[0]


def test_plain_help_still_lists_every_group_without_torch():
    text = _help([])
    assert "Config groups (GROUP=OPTION):" in text and "  hydra/launcher:" in text
    for group in ("task", "model", "dataset", "loss", "optimizer"):
        for option in options(group):
            assert re.search(rf"^    {option}\b", text, re.M), option
    assert "cvtrain task=detection --help" in text


def test_slurm_launcher_without_sbatch_is_one_line_and_exit_2(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    out = tmp_path / "out"
    result = run_cli(["-m", "hydra/launcher=slurm", "trainer.max_steps=1", f"paths.output_dir={out}"],
                     cwd=tmp_path, timeout=120, env={"PATH": str(empty)})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip() == (
        "cvtrain: error: hydra/launcher=slurm: cannot submit jobs: 'sbatch' was not found on this machine; "
        "run from a SLURM login node, or drop hydra/launcher=slurm to run here."
    )
    assert not out.exists(), "refused before Hydra wrote the sweep folder"


def test_a_launcher_that_fails_after_starting_is_one_line_too(tmp_path):
    fake = tmp_path / "bin"  # a cluster whose sbatch refuses the job
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n")
    for program in fake.iterdir():
        program.chmod(0o755)
    result = run_cli(["-m", "hydra/launcher=slurm", "trainer.max_steps=1", f"paths.output_dir={tmp_path / 'out'}"],
                     cwd=tmp_path, timeout=120, env={"PATH": str(fake)})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    ours = [line for line in result.stderr.splitlines() if line.startswith("cvtrain:")]
    assert len(ours) == 1 and ours[0] == result.stderr.strip().splitlines()[-1], result.stderr
    assert ours[0].startswith(
        "cvtrain: error: hydra/launcher=slurm failed to start the jobs: sbatch: error: invalid partition specified: gpu"
    ), ours[0]
    assert "drop hydra/launcher=slurm to run here" in ours[0]


def test_an_unknown_model_or_data_set_lists_only_what_the_task_accepts():
    from cvtrain.config.overrides import check_overrides
    from cvtrain.errors import UserError

    with pytest.raises(UserError) as error:
        check_overrides(["model=fastr_rcnn", "task=detection"])  # the task may come after the model
    assert "Did you mean 'faster_rcnn'?" in str(error.value)
    assert str(error.value).split("Valid: ")[1].startswith("faster_rcnn, fcos, retinanet, ssd.")
    with pytest.raises(UserError, match=r"Valid: coco, shapes, voc\."):
        check_overrides(["task=segmentation", "dataset=vocc"])
    with pytest.raises(UserError) as error:
        check_overrides(["mode=eval", "model=resnt18"])  # the task will come from the checkpoint: list all
    assert "faster_rcnn" in str(error.value) and "resnet18" in str(error.value)
