"""Stop requests: signals become a flag the loop honours between optimizer steps.

SLURM (preemption, the time limit), torchrun, `kill` and Ctrl-C all end a run with a
signal. Dying at once loses everything since the last epoch; instead, the handler only
records the signal, the trainer finishes the optimizer step it is in, writes last.pt
(with its place inside the epoch) and exits with 128 + the signal's number. Under
DDP every rank must stop at the same step, so the ranks agree on the flag through a
collective (`agreed`), whichever of them received the signal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time

import torch

log = logging.getLogger("cvtrain")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
# SLURM sends one of these ahead of the end of a job (sbatch --signal=USR1@120;
# submitit uses USR2): after saving, the job asks to be requeued.
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
IMPATIENT_SECONDS = 1.0  # a second Ctrl-C after this long aborts without waiting


class StopRequests:
    """While entered, the stop signals set `signum` instead of ending the process.

    A repeated signal is ignored (torchrun and SLURM may deliver one twice), except a
    second Ctrl-C a moment later: a person who wants out now gets a KeyboardInterrupt.
    Signal handlers can only be installed from the main thread; elsewhere this is inert.
    """

    def __init__(self):
        self.signum = 0
        self._since = 0.0
        self._previous: dict[int, object] = {}
        self._installed = contextlib.ExitStack()

    def __enter__(self) -> StopRequests:
        self._previous = self._installed.enter_context(handled_by(self._handle))
        return self

    def __exit__(self, *exc) -> None:
        self._installed.close()
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if not self.signum:
            self.signum, self._since = signum, time.monotonic()
        elif signum == signal.SIGINT and time.monotonic() - self._since > IMPATIENT_SECONDS:
            raise KeyboardInterrupt

    def agreed(self, device: torch.device, distributed: bool) -> int:
        """The signal any rank received (0: none), the same on every rank.

        One all-reduce of one number per optimizer step under DDP; free in one process.
        A signal that lands while the all-reduce runs (after this rank put in 0) is kept
        for the next step's all-reduce: the agreed answer never overwrites what this rank
        received, or the stop would be lost on every rank signalled at that moment.
        """
        if not distributed:
            return self.signum
        import torch.distributed as dist

        flag = torch.tensor([self.signum], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        agreed = int(flag.item())
        if agreed and not self.signum:  # another rank's signal: this rank is stopping too
            self.signum = agreed
        return agreed

    def previous_handler(self, signum: int):
        """The handler that was in place before ours (submitit installs one for USR2)."""
        return self._previous.get(signum)


@contextlib.contextmanager
def handled_by(handler):
    """`handler` receives the stop signals while inside; yields the handlers it replaced,
    and puts them back on the way out. Only the main thread may install signal handlers:
    elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield previous
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def requeue_slurm_job(signum: int, previous_handler) -> str:
    """After a SLURM warning signal: hand over to the handler that was there (submitit
    requeues in its own way), or requeue the job with scontrol. Returns what happened."""
    job = os.environ.get("SLURM_JOB_ID")
    if signum not in REQUEUE_SIGNALS or not job:
        return ""
    if callable(previous_handler):
        previous_handler(signum, None)
        return "handed over to the job's own handler"
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return "not requeued: scontrol is not on PATH"
    result = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return f"scontrol requeue {job} failed: {result.stderr.strip()[:120]}"
    return f"requeued SLURM job {job}; it resumes from last.pt"
