"""Process groups: who am I, how to talk to the others, and how to start them.

Three ways in, one result: `trainer.devices=N` (cvtrain starts N worker processes
itself), `torchrun -m cvtrain ...`, and SLURM tasks (srun / submitit). Each sets RANK,
WORLD_SIZE and LOCAL_RANK (SLURM's variables are translated here), and every rank then
joins one process group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_from_os() -> DistEnv:
    """This process's place in the job, from torchrun's or SLURM's variables."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return DistEnv(
            int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"])
        )
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        _export_slurm_env()
        return env_from_os()
    return DistEnv()


def _export_slurm_env() -> None:
    """Translate SLURM's task variables into torchrun's, as submitit does."""
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    if "MASTER_ADDR" not in os.environ:
        nodes = subprocess.run(
            ["scontrol", "show", "hostnames", os.environ.get("SLURM_JOB_NODELIST", "")],
            capture_output=True, text=True, check=False,
        ).stdout.split()
        os.environ["MASTER_ADDR"] = nodes[0] if nodes else "127.0.0.1"
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))


def init(env: DistEnv, backend: str) -> None:
    """Join the process group (once); `backend` is nccl, gloo or a per-device mapping."""
    if env.enabled and not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def resolve_backend(requested: str, device: torch.device) -> str:
    if requested != "auto":
        return requested
    return "nccl" if device.type == "cuda" else "gloo"


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all ranks, in place; a no-op in one process."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (for results that aren't sums)."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj`, on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def agree_on_run_stamp(stamp_env: str, make_stamp) -> None:
    """Under `torchrun -m cvtrain`, make every rank use rank 0's run stamp.

    Each rank composes the config itself; without this, ranks that start in different
    seconds would each create their own run folder.
    """
    env = env_from_os()
    if not env.enabled or stamp_env in os.environ:
        return
    init(env, "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    os.environ[stamp_env] = broadcast_object(make_stamp() if env.is_main else None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_workers(nprocs: int, command: list[str]) -> int:
    """Run `command` as `nprocs` ranks on this machine; the first failure stops them all.

    What torchrun --standalone does, without its agent: each worker gets RANK,
    LOCAL_RANK, WORLD_SIZE and a free MASTER_PORT; the exit status is the first non-zero
    one, so a worker's one-line error stays the last thing the user reads.

    A stop signal sent to this launcher (SIGTERM from SLURM, Ctrl-C) is forwarded to
    every worker once, and the launcher waits for them to save and exit; then it raises
    `Stopped` with their status. Workers run in their own session, so a terminal's Ctrl-C
    reaches them once (through here), not twice, and each dies with the launcher
    (Linux's parent-death signal), so none outlives it even if it is SIGKILLed.
    """
    base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(nprocs))
    workers = [
        subprocess.Popen(command, env=dict(base, RANK=str(r), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE=str(nprocs)),
                         start_new_session=True, preexec_fn=_die_with_parent)
        for r in range(nprocs)
    ]
    forwarded: list[int] = []

    def forward(signum, frame) -> None:
        if forwarded:  # asked twice: stop waiting
            _kill(workers)
            return
        forwarded.append(signum)
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    from cvtrain.engine.stopping import handled_by

    with handled_by(forward):
        status = _wait_for(workers)
    if forwarded:
        from cvtrain.errors import Stopped

        raise Stopped("", status or 128 + forwarded[0])  # rank 0 has said where it stopped
    return status


def _wait_for(workers: list[subprocess.Popen]) -> int:
    """The first non-zero exit status (0 if none); a failure ends the other workers."""
    status, running = 0, list(workers)
    try:
        while running:
            for worker in list(running):
                code = worker.poll()
                if code is None:
                    continue
                running.remove(worker)
                if code != 0 and status == 0:
                    status = code if code > 0 else 128 - code  # killed by a signal: 128 + its number
                    _kill(running)
            time.sleep(0.05)
    finally:
        _kill(running)  # never leave a worker behind, whatever happened here
    return status


def _kill(workers: list[subprocess.Popen]) -> None:
    """SIGKILL the live workers and reap them. Not SIGTERM: a worker saves on SIGTERM, and
    a rank blocked in a collective with a dead peer never gets back to Python to do so."""
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def _die_with_parent() -> None:
    """In a new worker (Linux): receive SIGTERM when the launcher dies, however it dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def python_module_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
