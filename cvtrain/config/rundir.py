"""Where a run writes: one folder per run, stable across ranks, requeues and resumes.

Registered as OmegaConf resolvers so `hydra.run.dir` can use them:
- `${run_stamp:}`: the run's time stamp, the same in every process of one run (the
  launcher and torchrun ranks share it through CVTRAIN_RUN_STAMP), and the SLURM job id
  under SLURM, so a requeued job finds its own folder again.
- `${run_dir:BASE,MODE,RESUME}`: a new folder BASE/STAMP for training, BASE/MODE-STAMP
  for eval and predict; with resume=true, the latest folder under BASE that holds
  checkpoints/last.pt; with resume=PATH, that run folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from cvtrain.errors import UserError

STAMP_ENV = "CVTRAIN_RUN_STAMP"
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"


_fresh = {"stamp": None}  # the stamp this process made itself (not inherited, not SLURM's)


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
        stamp = _unused(Path(base), prefix, stamp)
    return str(Path(base) / f"{prefix}{stamp}")


def mark_shared() -> None:
    """The stamp now belongs to several processes (torchrun ranks): never rename it."""
    _fresh["stamp"] = None


def _unused(base: Path, prefix: str, stamp: str) -> str:
    """`stamp`, or `stamp_2`, `stamp_3`...: two runs started in one second get two folders.

    The choice is shared with the rest of this process and its workers through the
    environment, like any other stamp, so it is made once.
    """
    unique, n = stamp, 1
    while (base / f"{prefix}{unique}").exists():
        n += 1
        unique = f"{stamp}_{n}"
    os.environ[STAMP_ENV] = unique
    _fresh["stamp"] = None
    return unique


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
