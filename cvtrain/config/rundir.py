"""Where a run writes: one folder per run, stable across ranks, requeues and resumes.

Registered as OmegaConf resolvers so `hydra.run.dir` can use them:
- `${run_stamp:}`: the run's time stamp, the same in every process of one run (the
  launcher and torchrun ranks share it through CVTRAIN_RUN_STAMP), and the SLURM job id
  under SLURM, so a requeued job finds its own folder again.
- `${run_dir:BASE,MODE,RESUME}`: a new folder BASE/STAMP for training, BASE/MODE-STAMP
  for eval and predict; with resume=true, the latest folder under BASE that holds
  checkpoints/last.pt; with resume=PATH, that run folder.

A new folder is created here, with one exclusive os.mkdir per candidate name, not left to
Hydra: checking exists() and creating later let two runs started in the same second
pick, and share, one folder. This process remembers the folders it created, so a run
that fails before writing anything can remove its own folder (`discard_if_unused`) and
never a resumed run's, a SLURM job's or one named with hydra.run.dir.
"""

from __future__ import annotations

import atexit
import os
import shutil
import time
from pathlib import Path

from cvtrain.errors import UserError

STAMP_ENV = "CVTRAIN_RUN_STAMP"
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"
# What makes a run folder worth keeping after a failure: something to resume or read.
RESULTS = ("checkpoints", "metrics.jsonl", "eval.json", "predictions.jsonl")


_fresh = {"stamp": None}  # the stamp this process made itself (not inherited, not SLURM's)
# Run folders this process created (absolute path -> the parent folders it created with it).
_created: dict[str, list[Path]] = {}


def run_stamp() -> str:
    """The run's stamp, fixed for this process (and its children) on first use."""
    stamp = os.environ.get(STAMP_ENV)
    if not stamp:
        job = os.environ.get("SLURM_JOB_ID")
        if job:
            array_task = os.environ.get("SLURM_ARRAY_TASK_ID")
            stamp = f"slurm-{job}" + (f"-{array_task}" if array_task else "")
        else:
            stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
            _fresh["stamp"] = stamp
        os.environ[STAMP_ENV] = stamp
    return stamp


def run_dir(base: str, mode: object, resume: object) -> str:
    """The folder of this run; see the module docstring."""
    if resume not in (False, None, "false", "False", ""):
        return _resume_dir(Path(base), resume)
    mode = getattr(mode, "value", mode)
    prefix = "" if str(mode) == "train" else f"{mode}-"
    stamp = run_stamp()
    if stamp == _fresh["stamp"]:
        stamp = _claim(Path(base), prefix, stamp)
    return str(Path(base) / f"{prefix}{stamp}")


def mark_shared() -> None:
    """The stamp now belongs to several processes (torchrun ranks): never rename it."""
    _fresh["stamp"] = None


def _claim(base: Path, prefix: str, stamp: str) -> str:
    """Create `stamp`, else `stamp_2`, `stamp_3`...: the first name no other run holds.

    os.mkdir either creates the folder or fails because it exists, in one step, so any
    number of runs started in one second each get a folder of their own. The choice is
    shared with the rest of this process and its workers through the environment, like
    any other stamp, so it is made once.
    """
    made = _missing_parents(base)
    unique, n = stamp, 1
    while True:
        base.mkdir(parents=True, exist_ok=True)
        try:
            (base / f"{prefix}{unique}").mkdir()
            break
        except FileExistsError:
            n += 1
            unique = f"{stamp}_{n}"
        except FileNotFoundError:
            continue  # a failed run removed the empty parent just now: create it again
    if not _created:
        atexit.register(_remove_empty_at_exit)
    _created[os.path.abspath(base / f"{prefix}{unique}")] = made
    os.environ[STAMP_ENV] = unique
    _fresh["stamp"] = None
    return unique


def _missing_parents(base: Path) -> list[Path]:
    """The folders above a run that do not exist yet, deepest first: a run that fails
    before writing anything removes them again, so a mistyped first command leaves no
    empty `outputs/TASK/MODEL` tree behind."""
    missing = []
    for folder in (base, *base.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def created_here(folder: str | Path) -> bool:
    """Whether this process created `folder` as a new run's folder. Resumed runs, SLURM
    jobs (kept for a requeue), torchrun ranks after the first and hydra.run.dir folders
    were not, and are never removed."""
    return os.path.abspath(folder) in _created


def discard_if_unused(folder: str | Path) -> bool:
    """Remove `folder` if this process created it and it holds no results yet.

    Called when a run fails before training (a missing data set, a bad checkpoint): the
    folder then holds only its config and log, and an empty folder per failed attempt
    would bury the real runs. A folder with checkpoints or metrics is always kept.
    """
    key = os.path.abspath(folder)
    if key not in _created or any((Path(key) / name).exists() for name in RESULTS):
        return False
    shutil.rmtree(key, ignore_errors=True)
    _remove_empty_parents(_created.pop(key))
    return not os.path.exists(key)


def _remove_empty_parents(parents: list[Path]) -> None:
    for parent in parents:
        try:
            parent.rmdir()  # only while empty: another run may have started in it
        except OSError:
            return


def _remove_empty_at_exit() -> None:
    """Remove the folders this process created and left empty: resolving hydra.run.dir
    without running (`cvtrain --cfg all --resolve`) creates one, and any run writes
    Hydra's .hydra/ into its folder, so an empty one was never used."""
    for key, parents in list(_created.items()):
        try:
            os.rmdir(key)
        except OSError:
            continue
        _remove_empty_parents(parents)


def _resume_dir(base: Path, resume: object) -> str:
    if resume is True or str(resume).lower() == "true":
        runs = sorted(p.parent.parent for p in base.glob(f"*/{LAST_CHECKPOINT}"))
        if not runs:
            raise UserError(
                f"resume=true: no earlier run with {LAST_CHECKPOINT} under '{base}'; "
                "drop resume=true to start a new run, or pass resume=RUN_FOLDER."
            )
        return str(max(runs, key=lambda p: (p / LAST_CHECKPOINT).stat().st_mtime))
    folder = Path(str(resume))
    if folder.is_file():
        folder = folder.parent.parent if folder.parent.name == "checkpoints" else folder.parent
    if not (folder / LAST_CHECKPOINT).is_file():
        raise UserError(
            f"resume={resume}: '{folder / LAST_CHECKPOINT}' does not exist; "
            "pass a run folder that holds checkpoints/last.pt, or resume=true for the latest run."
        )
    return str(folder)


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("run_stamp", run_stamp, replace=True)
    OmegaConf.register_new_resolver("run_dir", run_dir, replace=True)
