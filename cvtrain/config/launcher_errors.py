"""A sweep's launcher that cannot start (`hydra/launcher=slurm` on a laptop) fails in one line.

Two paths. Up front, `LauncherCheck` (a Hydra callback that conf/config.yaml installs)
runs when a multirun starts, before Hydra writes the sweep folder, and refuses a launcher
whose submission programs are not on this machine (`sbatch` for SLURM). After that, any
exception raised inside a launcher plugin is a user error (`launcher_failed`) told in one
line by `explain_launcher_failure`, which `config/explain.py` calls.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

from hydra.experimental.callback import Callback

from cvtrain.errors import UserError, error_chain

# What a launcher (by its `_target_`) runs to submit jobs: the cluster, its programs.
_SUBMITS_WITH = {
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher": ("SLURM", ("sbatch", "srun")),
}

# The launcher this process's sweep uses, as chosen (`slurm`); set when the sweep starts.
_chosen: str | None = None


class LauncherCheck(Callback):
    """Refuse, before anything is written, a sweep whose launcher cannot submit from here."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        global _chosen
        choices = config.hydra.runtime.get("choices") or {}
        _chosen = str(choices.get("hydra/launcher") or "") or None
        problem = cannot_start(_chosen or "", str(config.hydra.launcher.get("_target_", "")))
        if problem is None or os.environ.get("CVTRAIN_DEBUG", "") not in ("", "0"):
            return  # with --debug the launcher fails by itself, with its traceback
        # Hydra turns an exception raised here into a warning and carries on, so exit as the
        # CLI does for a UserError: one line on stderr, exit status 2.
        print(f"cvtrain: error: {problem}", file=sys.stderr)
        raise SystemExit(UserError.exit_code)


def cannot_start(choice: str, target: str) -> str | None:
    """Why the launcher `target` (chosen as hydra/launcher=`choice`) cannot submit jobs from
    this machine, with the fix; None when nothing is missing."""
    if target not in _SUBMITS_WITH:
        return None
    cluster, programs = _SUBMITS_WITH[target]
    missing = [p for p in programs if shutil.which(p) is None]
    if not missing:
        return None
    name = f"hydra/launcher={choice or target.rsplit('.', 1)[-1]}"
    return (f"{name}: cannot submit jobs: '{missing[0]}' was not found on this machine; "
            f"run from a {cluster} login node, or drop {name} to run here.")


def launcher_failed(error: BaseException) -> bool:
    """Whether `error` (or an error it came from) was raised inside a Hydra launcher plugin."""
    return any(_in_launcher_plugin(cause) for cause in error_chain(error))


def explain_launcher_failure(error: BaseException) -> str | None:
    """One line for a launcher plugin's failure; None when `error` is not one."""
    failed = next((cause for cause in error_chain(error) if _in_launcher_plugin(cause)), None)
    if failed is None:
        return None
    target = _launcher_target(failed)
    problem = cannot_start(_chosen or "", target)
    if problem:
        return problem
    name = f"hydra/launcher={_chosen}" if _chosen else "the Hydra launcher"
    lines = [line.strip() for line in str(failed).strip().splitlines() if line.strip()]
    what = f"{lines[0]} ({type(failed).__name__})" if lines else type(failed).__name__
    shown = f"`cvtrain {name} --cfg hydra` shows them" if _chosen else "`cvtrain --cfg hydra` shows them"
    return (f"{name} failed to start the jobs: {what}; check its hydra.launcher.* settings ({shown}), "
            f"or drop {name} to run here; --debug shows the traceback.")


def _plugin_frames(error: BaseException):
    tb = error.__traceback__
    while tb is not None:
        parts = tb.tb_frame.f_code.co_filename.split(os.sep)
        if "hydra_plugins" in parts[:-1]:
            package = parts[parts.index("hydra_plugins") + 1]
            if "launcher" in package:
                yield tb.tb_frame
        tb = tb.tb_next


def _in_launcher_plugin(error: BaseException) -> bool:
    return next(_plugin_frames(error), None) is not None


def _launcher_target(error: BaseException) -> str:
    """The `module.Class` of the launcher whose method the error went through."""
    for frame in _plugin_frames(error):
        launcher = frame.f_locals.get("self")
        if launcher is not None:
            kind = type(launcher)
            return f"{kind.__module__}.{kind.__qualname__}"
    return ""
