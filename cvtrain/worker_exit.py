"""How a distributed worker ends: its work saved, without the interpreter's teardown.

At teardown, gloo's threads were sometimes destroyed while still joinable, and the worker
of a finished run died of SIGABRT ("terminate called without an active exception"); the
launcher then failed the whole run. A worker therefore leaves through os._exit once its
process group is destroyed, after collecting what is unreachable (data-loader iterators
end their worker processes) and flushing its output.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import traceback


def run_then_exit(body) -> None:
    """Run `body` and leave with its exit status (SystemExit's code, 1 for an uncaught
    exception, whose traceback is printed as Python would), skipping finalization."""
    code = 0
    try:
        body()
    except SystemExit as leaving:
        code = leaving.code if isinstance(leaving.code, int) else int(leaving.code is not None)
        if leaving.code is not None and not isinstance(leaving.code, int):  # as Python does: the message
            print(leaving.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - a bug: its traceback, then a failed status
        traceback.print_exc()
        code = 1
    gc.collect()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def in_distributed_job() -> bool:
    """Started as one of several ranks (torchrun, cvtrain's launcher, SLURM's srun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("SLURM_NTASKS", "1")) > 1
