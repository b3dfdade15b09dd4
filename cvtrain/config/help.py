"""`cvtrain --help`: the config groups and their options, read from conf/ (no Hydra, no torch).

`cvtrain task=NAME --help` narrows the model, dataset and loss groups to the options that
task accepts and marks its defaults.
"""

from __future__ import annotations

from cvtrain.config.groups import (
    EXPERIMENT, GROUPS, accepted, describe, experiment_choices, options, task_defaults, task_families, user_config_dirs,
    uses_loss,
)
from cvtrain.errors import unknown_choice

USAGE_LINE = "usage: cvtrain [--config-dir DIR] [experiment=NAME] [GROUP=OPTION ...] [KEY=VALUE ...] [-m] [--debug]"

USAGE = f"""\
{USAGE_LINE}

Train, evaluate or predict with one composed config. Examples:
  cvtrain task=classification                       train with the task's defaults
  cvtrain task=classification model=resnet18 optimizer.lr=3e-4 trainer.epochs=20
  cvtrain task=classification mode=eval ckpt=outputs/classification/cnn/RUN/checkpoints/best.pt
  cvtrain task=classification mode=predict ckpt=PATH input='photos/*.jpg'
  cvtrain task=classification resume=true           continue the latest run
  cvtrain trainer.devices=2                         DistributedDataParallel, 2 processes
  cvtrain -m optimizer.lr=1e-3,1e-4                 a sweep (hydra/launcher=slurm on a cluster)
  cvtrain experiment=detection_fcos trainer.epochs=2  a saved set of choices, then your own
  cvtrain --config-dir myconf model=my_net          your own models, data sets, experiments (myconf/model/...)
  cvtrain task=detection --help                     the models, data sets and losses a task accepts
"""

LAUNCHERS = "  hydra/launcher: basic, slurm (cvtrain's settings), submitit_slurm, submitit_local"

FOOTER = """\
Other keys: mode=train|eval|predict, seed=N, ckpt=PATH (or ckpt={NAME: PATH, ...}), input=GLOB, resume=true|RUN_FOLDER,
paths.output_dir=DIR; generators in mode=predict: num_samples=N, class=NAME. Every key of a group: cvtrain/config/schema.py, or `cvtrain --cfg job`.
--debug shows tracebacks; --hydra-help shows Hydra's own flags."""


def render_help(task: str | None = None) -> str:
    """The help text: usage, then each group with its options and their descriptions.

    With `task` (a name, or a sweep `a,b`), each task's section lists only what it accepts
    and marks its defaults with `*`; an unknown task is a `UserError`.
    """
    if not task:
        lines = [USAGE, "Config groups (GROUP=OPTION):"]
        for group in GROUPS:
            lines.append(f"  {group}:")
            lines += [_option_line(group, option) for option in options(group)]
        lines += [LAUNCHERS, "", "Experiments (experiment=NAME: whole-run settings over the task's defaults):"]
        lines += [_option_line(EXPERIMENT, option) for option in options(EXPERIMENT)] or ["    (none)"]
        return "\n".join([*lines, *_user_folders(), "", FOOTER])
    tasks = [t.strip() for t in task.split(",") if t.strip()]
    for name in tasks:
        if name not in options("task"):
            raise unknown_choice("task", name, options("task"), "Pick one with task=NAME.")
    usage = USAGE_LINE.replace("cvtrain ", f"cvtrain task={task} ", 1)
    lines = [usage, "(`cvtrain --help`: every task, model and data set, and examples.)", ""]
    for name in tasks:
        lines += [*_task_section(name), ""]
    lines.pop()
    return "\n".join([*lines, LAUNCHERS, *_user_folders(), "", FOOTER])


def task_from_args(args: list[str]) -> str | None:
    """The task a command line names (`task=NAME`; the last one wins, as in Hydra), else
    the one its experiment picks (`experiment=NAME --help` shows what that task accepts)."""
    named = [a.split("=", 1)[1] for a in args if a.lstrip("+").startswith("task=")]
    if named:
        return named[-1]
    experiments = [a.split("=", 1)[1] for a in args if a.startswith(f"{EXPERIMENT}=")]
    if not experiments:
        return None
    if experiments[-1] not in options(EXPERIMENT):
        raise unknown_choice(EXPERIMENT, experiments[-1], options(EXPERIMENT), f"Pick one with {EXPERIMENT}=NAME.")
    return experiment_choices(experiments[-1]).get("task")


def _task_section(task: str) -> list[str]:
    defaults = task_defaults(task)
    families = ", ".join(task_families(task))
    lines = [
        f"task={task}: {describe('task', task)}",
        "Defaults: " + " ".join(f"{group}={option}" for group, option in defaults.items()),
        "",
        f"What task={task} accepts (GROUP=OPTION; * marks its default):",
    ]
    for group in GROUPS[1:]:
        if group == "loss" and not uses_loss(task):
            lines.append(f"  loss: none to pick; the task computes its own loss (loss={defaults['loss']} is ignored)")
            continue
        lines.append(f"  model ({families} models):" if group == "model" and families else f"  {group}:")
        lines += [_option_line(group, option, option == defaults[group]) for option in accepted(task, group)]
    ours = [e for e in options(EXPERIMENT) if experiment_choices(e).get("task") == task]
    if ours:
        lines += [f"  {EXPERIMENT} (whole-run settings for task={task}):", *(_option_line(EXPERIMENT, e) for e in ours)]
    return lines


def _user_folders() -> list[str]:
    """Where a user's own options come from, when a command line adds folders."""
    folders = user_config_dirs()
    return [f"Config folders searched besides cvtrain's: {', '.join(map(str, folders))}"] if folders else []


def _option_line(group: str, option: str, default: bool = False) -> str:
    about = describe(group, option)
    line = f"  {'*' if default else ' '} {option:<22}{about}"
    return line.rstrip()
