"""What the conf/ folder offers: its groups and their options, read from the files.

Listing YAML files is enough to answer `--help` and to reject `model=resnt18` with the
valid choices before Hydra starts, which keeps both fast and their messages short.
"""

from __future__ import annotations

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# Groups a user picks from, in the order `--help` shows them.
GROUPS = ("task", "model", "dataset", "loss", "optimizer", "scheduler", "trainer", "logger")


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
