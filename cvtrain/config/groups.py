"""What the config folders offer: their groups and options, read from the files.

Listing YAML files is enough to answer `--help` and to reject `model=resnt18` with the
valid choices before Hydra starts, which keeps both fast and their messages short. The
folders are cvtrain's conf/ and any a user adds (`--config-dir DIR`, or
`hydra.searchpath=[file://DIR]`): each file says what it fits (a model file its family, a
task file the families it accepts, a data set or loss file the tasks it feeds), so adding
one edits nothing central.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path


def _conf_dir() -> Path:
    """The configs: conf/ beside cvtrain/ in a source tree (an editable install too),
    cvtrain/conf/ in an installed wheel (setup.py maps the one to the other)."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "conf"
    return installed if (installed / "config.yaml").is_file() else package.parent / "conf"


CONF_DIR = _conf_dir()

# Groups a user picks from, in the order `--help` shows them.
GROUPS = ("task", "model", "dataset", "loss", "optimizer", "scheduler", "trainer", "logger")
# Settings of a whole run (conf/experiment/NAME.yaml, `# @package _global_`), picked last.
EXPERIMENT = "experiment"

# The user's config folders, for the worker processes of a distributed run and the app's
# import of a user's model module: `python -m cvtrain.app` never sees the command line.
USER_DIRS_ENV = "CVTRAIN_CONFIG_DIRS"

_FIRST: list[Path] = []  # --config-dir: searched before conf/, as Hydra does
_LAST: list[Path] = []  # hydra.searchpath: searched after it
_SEARCHPATH = re.compile(r"^\+{0,2}hydra\.searchpath=(?P<value>.*)$")


def use_config_dirs(first: list[str], last: list[str] = ()) -> None:
    """Search `first` before conf/ and `last` after it (what `--config-dir` and
    `hydra.searchpath` tell Hydra); the env var passes them on to child processes."""
    _FIRST[:] = [Path(d).expanduser().resolve() for d in first]
    _LAST[:] = [Path(d).expanduser().resolve() for d in last]
    _read_yaml.cache_clear()
    if _FIRST or _LAST:
        os.environ[USER_DIRS_ENV] = os.pathsep.join(map(str, [*_FIRST, *_LAST]))
    else:
        os.environ.pop(USER_DIRS_ENV, None)


def config_dirs_from_args(args: list[str]) -> tuple[list[str], list[str]]:
    """The folders a command line adds: `--config-dir DIR` / `-cd DIR` / `--config-dir=DIR`,
    and the `file://` entries of `hydra.searchpath=[...]` (pkg:// entries are not folders)."""
    first, last = [], []
    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            first.append(args[i + 1])
        elif arg.startswith("--config-dir="):
            first.append(arg.split("=", 1)[1])
        elif match := _SEARCHPATH.match(arg):
            entries = [e.strip().strip("'\"") for e in match["value"].strip("'\"[] ").split(",")]
            last += [e.removeprefix("file://") for e in entries if e.startswith("file://")]
    return first, last


def user_config_dirs() -> list[Path]:
    """The user's folders of this run: those set here, else those a parent process passed on."""
    if _FIRST or _LAST:
        return [*_FIRST, *_LAST]
    return [Path(d) for d in os.environ.get(USER_DIRS_ENV, "").split(os.pathsep) if d]


def config_dirs() -> list[Path]:
    """Every folder searched, in Hydra's order: --config-dir, conf/, hydra.searchpath."""
    return [*_FIRST, CONF_DIR, *_LAST]


def config_file(group: str, option: str) -> Path:
    """The file of `group=option`: the first folder that has it wins, as in Hydra."""
    for folder in config_dirs():
        path = folder / group / f"{option}.yaml"
        if path.is_file():
            return path
    return CONF_DIR / group / f"{option}.yaml"


def options(group: str) -> list[str]:
    """Option names of `group` in every folder (YAML files, hidden schemas `_x` excluded)."""
    found = {p.stem for folder in config_dirs() for p in (folder / group).glob("*.yaml")}
    return sorted(name for name in found if not name.startswith("_"))


def describe(group: str, option: str) -> str:
    """The first comment line of an option's file: its one-line description."""
    for line in config_file(group, option).read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# @package"):
            continue
        if stripped.startswith("#"):
            return stripped.lstrip("# ").strip()
        if stripped:
            break
    return ""


@lru_cache(maxsize=None)
def _read_yaml(path: Path) -> dict:
    """A config file as plain data (read once: --help asks each file several questions)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path)) or {}


def _defaults(group: str, option: str) -> list:
    return list(_read_yaml(config_file(group, option)).get("defaults") or [])


def model_family(option: str) -> str:
    """The family a model file declares through its schema default (`- _classifier`)."""
    for entry in _defaults("model", option):
        if isinstance(entry, str) and entry.startswith("_"):
            return entry[1:]
    return ""


def task_families(task: str) -> list[str]:
    """The model families a task file accepts (its `task.families`)."""
    return list((_read_yaml(config_file("task", task)).get("task") or {}).get("families") or [])


def declared_tasks(group: str, option: str) -> list[str]:
    """The tasks a data set or loss file says it feeds (its `tasks:` key)."""
    return list(_read_yaml(config_file(group, option)).get("tasks") or [])


def default_choice(group: str) -> str:
    """The option config.yaml picks for `group` when the command line does not."""
    for entry in _read_yaml(config_file("", "config")).get("defaults") or []:
        if isinstance(entry, dict) and group in entry:
            return str(entry[group])
    return ""


def _overridden(entries: list) -> dict[str, str]:
    """The group choices a defaults list overrides (`- override /model: gru`)."""
    chosen = {}
    for entry in entries:
        for key, value in (entry.items() if isinstance(entry, dict) else ()):
            chosen[str(key).removeprefix("override").strip().lstrip("/")] = str(value)
    return chosen


def experiment_choices(experiment: str) -> dict[str, str]:
    """The options of each group an experiment picks (its `- override /GROUP: OPTION`)."""
    return {g: o for g, o in _overridden(_defaults(EXPERIMENT, experiment)).items() if g in GROUPS}


def task_defaults(task: str) -> dict[str, str]:
    """The option of each group a run of `task` gets when the command line names none:
    config.yaml's choice, unless the task file overrides it (`- override /model: gru`)."""
    chosen = {group: default_choice(group) for group in GROUPS if group != "task"}
    chosen.update({g: o for g, o in _overridden(_defaults("task", task)).items() if g in chosen})
    return chosen


def uses_loss(task: str) -> bool:
    """Whether `task` builds its loss from the loss group (no loss file feeding it: it
    computes its own, as the detectors and the recurrent tasks do)."""
    return any(task in declared_tasks("loss", loss) for loss in options("loss"))


def accepted(task: str, group: str) -> list[str]:
    """The options of `group` a run of `task` can use: models of the families it accepts,
    data sets and losses that feed it (a task that computes its own loss accepts only its
    default, which it ignores); every option of any other group."""
    if group == "model":
        families = task_families(task)
        return [m for m in options("model") if not families or model_family(m) in families]
    if group == "dataset":
        return [d for d in options("dataset") if task in declared_tasks("dataset", d)]
    if group == "loss":
        if not uses_loss(task):
            return [task_defaults(task)["loss"]]
        return [loss for loss in options("loss") if task in declared_tasks("loss", loss)]
    return options(group)
