"""Starting workers: `trainer.devices=N` (and `trainer.nodes`, `trainer.max_restarts`)
run the worker command under torch's elastic agent, the library torchrun is built on.

cvtrain keeps three things of its own around it: the stop signals (forwarded once to
each worker, which saves and exits), the workers' death with the launcher, and one line
for a failed worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time

from cvtrain.errors import UserError

LAUNCHER_PID_ENV = "CVTRAIN_LAUNCHER_PID"  # set for the workers: who they die with
ERROR_FILE_ENV = "TORCHELASTIC_ERROR_FILE"  # set by the agent: where a worker says why it failed
ELASTIC_SIGNALS = "SIGHUP,SIGQUIT"  # the agent's own handlers; the stop signals are ours
# Each attempt's workers get a new store, hosted by rank 0 on a free port, not the agent's
# one store: a restarted group would read the failed group's addresses from the shared
# store (gloo: "connection refused"), and workers whose launcher was SIGKILLed keep a store
# to save through.
OWN_STORE_ENV = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"
_ELASTIC_LOGGERS = ("torch.distributed.elastic", "torch.distributed.launcher")


class WorkerFailed(UserError):
    """A worker failed: the launcher's error is that worker's one line, with its exit status."""

    def __init__(self, line: str, exit_code: int):
        super().__init__(line)
        self.exit_code = exit_code


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rendezvous_endpoint(nodes: int, endpoint: str) -> str:
    """Where the agents meet: `trainer.rdzv_endpoint`; else, for one node, a free port of
    this machine (as torchrun --standalone: two runs on one machine never meet by mistake),
    and for several, MASTER_ADDR:MASTER_PORT."""
    if endpoint:
        return endpoint
    if nodes == 1:
        return f"127.0.0.1:{free_port()}"
    if "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ:
        return f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    raise UserError(f"trainer.nodes={nodes} needs a meeting point for the nodes: add trainer.rdzv_endpoint=HOST:PORT "
                    "(a host and free port every node reaches, the same on each node) "
                    "or set MASTER_ADDR and MASTER_PORT.")


def launch_config(nprocs: int, nodes: int, max_restarts: int, endpoint: str, log_dir: str):
    """The elastic agent's settings: a fixed number of nodes meeting through c10d (no etcd),
    `max_restarts` restarts of the whole worker group, workers' output left on the console."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig

    return LaunchConfig(
        min_nodes=nodes, max_nodes=nodes, nproc_per_node=nprocs, rdzv_backend="c10d",
        rdzv_endpoint=rendezvous_endpoint(nodes, endpoint),
        run_id=os.environ.get("SLURM_JOB_ID", "cvtrain"),  # the same on every node
        max_restarts=max_restarts, monitor_interval=0.1, signals_to_handle=ELASTIC_SIGNALS,
        logs_specs=DefaultLogsSpecs(log_dir=log_dir), local_addr="127.0.0.1" if nodes == 1 else None,
    )


def launch_workers(command: list[str], nprocs: int, nodes: int = 1, max_restarts: int = 0, endpoint: str = "") -> None:
    """Run `command` as `nprocs` ranks on this machine (of `nodes` machines) under torch's
    elastic agent; returns when they all succeed.

    A failed worker ends the others (the agent sends them SIGTERM, then SIGKILL after 30 s);
    with restarts left, the agent starts the group again and each worker resumes from the
    run's last.pt; otherwise this raises `WorkerFailed` with that worker's one-line error.
    A stop signal raises `Stopped` once the workers have saved (`_SignalForwarder`).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    from cvtrain.engine.stopping import handled_by
    from cvtrain.errors import Stopped

    _quiet_elastic_logs()
    forwarder = _SignalForwarder(command)
    with (tempfile.TemporaryDirectory(prefix="cvtrain-elastic-") as log_dir,
          _env(LAUNCHER_PID_ENV, str(os.getpid())), _env(OWN_STORE_ENV, "1")):
        config = launch_config(nprocs, nodes, max_restarts, endpoint, log_dir)
        try:
            with handled_by(forwarder.forward):
                elastic_launch(config, command[0])(*command[1:])
        except SignalException as stop:  # rank 0 has said where it stopped
            raise Stopped("", 128 + (forwarder.signum or int(stop.sigval))) from None
        except ChildFailedError as failed:
            raise WorkerFailed(*describe_failure(failed.failures)) from None


def _quiet_elastic_logs() -> None:
    """The agent logs every start, restart and closing signal, and a page per failure;
    cvtrain says what matters in one line, so only the agent's critical messages pass
    (all of them with CVTRAIN_DEBUG=1, to see what the agent does)."""
    if os.environ.get("CVTRAIN_DEBUG", "") not in ("", "0"):
        return
    import importlib

    for module in ("c10d_rendezvous_backend", "dynamic_rendezvous"):  # imported late by the agent: their loggers now
        importlib.import_module(f"torch.distributed.elastic.rendezvous.{module}")
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith(_ELASTIC_LOGGERS):
            logging.getLogger(name).setLevel(logging.CRITICAL)


@contextlib.contextmanager
def _env(name: str, value: str):
    """`os.environ[name] = value` while inside (the agent copies os.environ to each worker)."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


class _SignalForwarder:
    """The launcher's handler for the stop signals (SIGTERM, SIGINT, SIGUSR1/2).

    The first one goes to each worker once (to the worker alone, not its process group:
    DataLoader workers must not die under it), and the launcher waits, inside the handler
    so that the agent can neither restart the stopped group nor signal it a second time,
    until every worker has saved and exited. Then `SignalException` tells the agent to
    shut down. A second signal while waiting SIGKILLs the workers: the way out of a worker
    stuck in a collective.
    """

    def __init__(self, command: list[str]):
        self.command = command  # how to tell the workers from other children
        self.signum = 0
        self.workers: list[int] = []

    def forward(self, signum: int, frame) -> None:
        from torch.distributed.elastic.multiprocessing.api import SignalException

        if self.signum:  # asked twice: stop waiting
            for pid in self.workers:
                _signal(pid, signal.SIGKILL)
            return
        self.signum = signum
        self.workers = _children(self.command)
        for pid in self.workers:
            _signal(pid, signum)
        while any(_running(pid) for pid in self.workers):
            time.sleep(0.05)
        raise SignalException(f"cvtrain's launcher got {signal.Signals(signum).name}", signal.Signals(signum))


def _children(command: list[str]) -> list[int]:
    """PIDs of this process's children that run `command` (its workers), from /proc.
    None found without /proc (not Linux): then the agent forwards the signal itself."""
    if not os.path.isdir("/proc"):
        return []
    me, found, wanted = os.getpid(), [], "\0".join(command).encode() + b"\0"
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                    runs = cmdline.read().endswith(wanted)
            except (OSError, IndexError, ValueError):
                continue
            if parent == me and runs:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """Alive and not yet a zombie (its exit status is the agent's to collect, not ours)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def die_with_launcher() -> None:
    """In a worker that cvtrain's launcher started (Linux): receive SIGTERM when the
    launcher dies, however it dies (SIGKILL included), so the worker saves and exits
    rather than training on alone. torch's agent does not arrange this itself."""
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if not launcher or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(launcher):  # it died before the line above: nobody will tell us
        os.kill(os.getpid(), signal.SIGTERM)


def record_failure(line: str, secondary: bool) -> bool:
    """Leave this worker's one-line error where the agent collects it (the file it named in
    TORCHELASTIC_ERROR_FILE), for the launcher to print; `secondary`: the error only
    follows another rank's failure (a collective with a dead peer). True if recorded:
    then the launcher prints the line, and the worker need not."""
    path = os.environ.get(ERROR_FILE_ENV)
    if not path or LAUNCHER_PID_ENV not in os.environ:  # torchrun: it prints its own report
        return False
    now = time.time()
    record = {"message": line, "timestamp": int(now), "cvtrain": {"line": line, "secondary": secondary, "time": now}}
    with open(path, "w") as handle:
        json.dump(record, handle)
    return True


def describe_failure(failures: dict) -> tuple[str, int]:
    """The one line and exit status to report for a failed worker group: the first error
    of a worker that failed on its own, rather than its peers' errors about it."""

    def closed_by_the_agent(failure) -> bool:  # SIGTERM is how the agent ends the others after a failure
        return failure.exitcode == -signal.SIGTERM and any(f.exitcode != -signal.SIGTERM for f in failures.values())

    def root_cause_first(item):
        rank, failure = item
        record = failure.error_file_data.get("cvtrain") or {}
        secondary = bool(record.get("secondary")) or closed_by_the_agent(failure)
        return secondary, not record, record.get("time", failure.timestamp), rank

    rank, failure = min(failures.items(), key=root_cause_first)
    record = failure.error_file_data.get("cvtrain")
    if record:
        return record["line"], failure.exitcode if 0 < failure.exitcode < 256 else 1
    if failure.exitcode == -signal.SIGKILL:
        return (f"worker rank {rank} was killed by SIGKILL, often for lack of memory; lower dataset.batch_size "
                "or see the system log (dmesg)", 128 + signal.SIGKILL)
    if failure.exitcode < 0:
        return (f"worker rank {rank} was killed by {failure.signal_name()}; its output above may say why",
                128 - failure.exitcode)
    return (f"worker rank {rank} exited with status {failure.exitcode} without an error message; "
            "its output above says why", failure.exitcode)


def python_module_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
