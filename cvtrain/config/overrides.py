"""Checks on command-line overrides that need no Hydra: unknown groups and options.

Hydra would reject `model=resnt18` too, but with a multi-line report; checking the
choice against the files first gives one line with the closest match.
"""

from __future__ import annotations

import importlib.util
import re

from cvtrain.config.groups import (
    EXPERIMENT, GROUPS, accepted, declared_tasks, default_choice, experiment_choices, model_family, options,
    task_families, uses_loss,
)
from cvtrain.errors import UserError, unknown_choice

_GROUP_CHOICE = re.compile(r"^(?P<op>[+~]{0,2})(?P<key>[\w/]+)(@[\w.]+)?=(?P<value>.*)$")

# Launchers shipped by Hydra plugins rather than by conf/: plugin module and extra.
_PLUGIN_LAUNCHERS = {
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", None),
}


def check_overrides(overrides: list[str]) -> None:
    """Raise a `UserError` for a group choice that names no option."""
    matches = [m for m in map(_GROUP_CHOICE.match, overrides) if m]
    chosen: dict[str, list[str]] = {}
    for match in matches:
        if match["key"] == "mode":
            chosen["mode"] = _sweep_values(match["value"])
    experiments = [c for m in matches if m["key"] == EXPERIMENT for c in _check_choices(EXPERIMENT, m["value"])]
    implied = sorted({experiment_choices(e)["task"] for e in experiments if "task" in experiment_choices(e)})
    # The task first: an unknown model or data set is then told against what it accepts.
    for match in sorted(matches, key=lambda m: m["key"] != "task"):
        key, value = match["key"], match["value"]
        if key in GROUPS:
            chosen[key] = _check_choices(key, value, _listed(key, chosen.get("task") or implied, chosen))
        elif key == "hydra/launcher":
            _check_launcher(value)
    for combination in _with_experiments(chosen, experiments):
        _check_task_accepts_choices(combination)


def _with_experiments(chosen: dict[str, list[str]], experiments: list[str]) -> list[dict[str, list[str]]]:
    """The choices of each experiment of the command line (one, or a sweep's): what the
    experiment picks, checked as the command line's are, unless the command line picks
    otherwise (Hydra applies the command line last)."""
    combinations = []
    for experiment in experiments:
        picks = experiment_choices(experiment)
        for group, option in picks.items():
            if option not in options(group):
                raise unknown_choice(group, option, options(group), f"Fix experiment {experiment}'s defaults.")
        combinations.append({**{group: [option] for group, option in picks.items()}, **chosen})
    return combinations or [chosen]


def _listed(group: str, tasks: list[str], chosen: dict[str, list[str]]) -> list[str]:
    """The options an unknown choice of `group` is told against: for a model or data set,
    those the chosen task(s) accept (not every task's), unless the task comes from an
    eval/predict run's checkpoint; for the other groups, all."""
    if group not in ("model", "dataset") or (not tasks and _task_from_checkpoint(chosen)):
        return options(group)
    tasks = tasks or [default_choice("task")]
    return sorted({option for task in tasks for option in accepted(task, group)})


def _task_from_checkpoint(chosen: dict[str, list[str]]) -> bool:
    return "task" not in chosen and any(mode != "train" for mode in chosen.get("mode", []))


def _check_task_accepts_choices(chosen: dict[str, list[str]]) -> None:
    """`task=captioning model=resnet18` or `task=detection dataset=digits` is refused
    before its config is even composed. An eval or predict run that names no task takes
    the checkpoint's, so its data set and loss are left to the task to check."""
    from_checkpoint = _task_from_checkpoint(chosen)
    for task in chosen.get("task") or [default_choice("task")]:
        for model in chosen.get("model", []):
            check_task_accepts(task, task_families(task), model, model_family(model))
        if from_checkpoint:
            continue
        for group in ("dataset", "loss"):
            for option in chosen.get(group, []):
                check_task_accepts_option(task, group, option)


def check_task_accepts(task: str, families: list[str], model: str, family: str) -> None:
    """A model of a family the task does not accept is refused, naming the models that fit."""
    if families and family not in families:
        fits = [m for m in options("model") if model_family(m) in families]
        raise UserError(f"task={task} cannot train model={model} (a {family} model); pick one of: {', '.join(fits)}.")


def check_task_accepts_option(task: str, group: str, option: str) -> None:
    """A data set or loss that cannot feed `task` is refused, naming the ones that can."""
    fits = accepted(task, group)
    if option in fits:
        return
    if group == "loss" and not uses_loss(task):
        raise UserError(f"task={task} computes its own loss, so loss={option} would be ignored; drop loss={option}.")
    feeds = declared_tasks(group, option)
    about = f" (a {group} for {', '.join(feeds)})" if feeds else ""
    raise UserError(f"task={task} cannot use {group}={option}{about}; pick one of: {', '.join(fits)}.")


def _check_choices(group: str, value: str, listed: list[str] | None = None) -> list[str]:
    """The choices of `value`; one that is no option of `group` is refused, with the
    closest of `listed` (all options unless given) and the list itself."""
    valid = options(group)
    listed = valid if listed is None else listed
    choices = _sweep_values(value)
    for choice in choices:
        if choice not in valid:
            raise unknown_choice(group, choice, listed, f"Pick one with {group}=NAME.")
    return choices


def _sweep_values(value: str) -> list[str]:
    """The choices of `a,b,c` (a multirun sweep) or the single choice."""
    if value.startswith(("choice(", "range(", "glob(", "[")):
        return []  # Hydra's sweep syntax: leave it to Hydra
    return [v.strip() for v in value.split(",") if v.strip()]


def _check_launcher(value: str) -> None:
    if value in options("hydra/launcher") or value == "basic":
        return
    if value in _PLUGIN_LAUNCHERS:
        module, extra = _PLUGIN_LAUNCHERS[value]
        if not _has(module):
            package = module.split(".")[1].replace("_", "-")
            install = f"pip install 'cvtrain[{extra}]'" if extra else f"pip install {package}"
            raise UserError(f"hydra/launcher={value} needs its Hydra plugin; install it with: {install}")
        return
    valid = ["basic", *options("hydra/launcher"), *_PLUGIN_LAUNCHERS]
    raise unknown_choice("launcher", value, valid, "Pick one with hydra/launcher=NAME.")


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False
