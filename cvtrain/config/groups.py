"""What the conf/ folder offers: its groups and their options, read from the files.

Listing YAML files is enough to answer `--help` and to reject `model=resnt18` with the
valid choices before Hydra starts, which keeps both fast and their messages short.
"""

from __future__ import annotations

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

# The tasks each data set and each loss can feed: the families their builders register
# under (cvtrain/data/*.py, cvtrain/tasks/losses.py; tests/test_cli_help_launcher.py keeps
# the two equal), written out here because reading the registries imports torch. Models
# need no table: a model file names its family and a task file the families it accepts.
# A task that no loss feeds computes its own loss (detectors, the recurrent tasks).
DATASET_TASKS = {
    "shapes": (
        "classification", "segmentation", "detection", "instance_segmentation", "captioning", "language_modeling",
    ),
    "digits": ("classification",),
    "mnist": ("classification",),
    "cifar10": ("classification",),
    "image_folder": ("classification",),
    "voc": ("segmentation", "detection"),
    "coco": ("segmentation", "detection", "instance_segmentation"),
    "coco_captions": ("captioning",),
    "text": ("language_modeling",),
}
LOSS_TASKS = {
    "cross_entropy": ("classification", "segmentation"),
    "ce_dice": ("segmentation",),
}


def options(group: str) -> list[str]:
    """Option names of `group` (YAML files in conf/<group>/, hidden schemas excluded)."""
    folder = CONF_DIR / group
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))


def describe(group: str, option: str) -> str:
    """The first comment line of an option's file: its one-line description."""
    path = CONF_DIR / group / f"{option}.yaml"
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# @package"):
            continue
        if stripped.startswith("#"):
            return stripped.lstrip("# ").strip()
        if stripped:
            break
    return ""


def model_family(option: str) -> str:
    """The family a model file declares through its schema default (`- _classifier`)."""
    for line in (CONF_DIR / "model" / f"{option}.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("- _"):
            return stripped[3:].strip()
    return ""


def task_families(task: str) -> list[str]:
    """The model families a task file accepts (its `task.families`)."""
    from omegaconf import OmegaConf

    node = OmegaConf.load(CONF_DIR / "task" / f"{task}.yaml")
    return list(OmegaConf.select(node, "task.families", default=[]) or [])


def default_choice(group: str) -> str:
    """The option config.yaml picks for `group` when the command line does not."""
    for line in (CONF_DIR / "config.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith(f"- {group}:"):
            return stripped.split(":", 1)[1].split("#")[0].strip()
    return ""


def task_defaults(task: str) -> dict[str, str]:
    """The option of each group a run of `task` gets when the command line names none:
    config.yaml's choice, unless the task file overrides it (`- override /model: gru`)."""
    from omegaconf import OmegaConf

    chosen = {group: default_choice(group) for group in GROUPS if group != "task"}
    listed = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / f"{task}.yaml")).get("defaults", [])
    for entry in listed:
        for key, value in (entry.items() if isinstance(entry, dict) else ()):
            group = str(key).removeprefix("override").strip().lstrip("/")
            if group in chosen:
                chosen[group] = str(value)
    return chosen


def uses_loss(task: str) -> bool:
    """Whether `task` builds its loss from the loss group (others compute their own)."""
    return any(task in tasks for tasks in LOSS_TASKS.values())


def accepted(task: str, group: str) -> list[str]:
    """The options of `group` a run of `task` can use: models of the families it accepts,
    data sets and losses that feed it (a task that computes its own loss accepts only its
    default, which it ignores); every option of any other group."""
    if group == "model":
        families = task_families(task)
        return [m for m in options("model") if not families or model_family(m) in families]
    if group == "dataset":
        return [d for d in options("dataset") if task in DATASET_TASKS.get(d, ())]
    if group == "loss":
        if not uses_loss(task):
            return [task_defaults(task)["loss"]]
        return [loss for loss in options("loss") if task in LOSS_TASKS.get(loss, ())]
    return options(group)
