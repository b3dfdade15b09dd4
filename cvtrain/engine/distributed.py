"""Process groups: who am I and how to talk to the others (engine/launcher.py starts them).

Three ways in, one result: `trainer.devices=N` (cvtrain starts N worker processes per
node through torch's elastic agent, as torchrun does), `torchrun -m cvtrain ...`, and
SLURM tasks (srun / submitit). Each sets RANK, WORLD_SIZE and LOCAL_RANK (SLURM's
variables are translated here), and every rank then joins one process group.
"""

from __future__ import annotations

import os
import subprocess
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


def reduce_state(state: dict[str, torch.Tensor], op: str = "sum") -> dict[str, torch.Tensor]:
    """A metric's state (`{"correct": t, "total": t}`) reduced over all ranks in one
    collective, not one per entry: the tensors are flattened into one buffer, reduced,
    and split back. `op` is sum, max or min. Returns new tensors; the same values in one
    process. Every rank must pass the same keys with the same shapes."""
    if not dist.is_initialized() or not state:
        return dict(state)
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    if op not in ops:
        raise ValueError(f"reduce_state: unknown op '{op}'; use one of {', '.join(ops)}")
    keys = sorted(state)  # the same order on every rank, whatever order the dict was built in
    dtype = torch.float64 if any(state[k].is_floating_point() for k in keys) else torch.int64
    flat = torch.cat([state[k].detach().reshape(-1).to(dtype) for k in keys])
    dist.all_reduce(flat, op=ops[op])
    out, at = {}, 0
    for key in keys:
        n = state[key].numel()
        out[key] = flat[at:at + n].reshape(state[key].shape).to(state[key].dtype)
        at += n
    return out


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's `tensor`, concatenated along dim 0 in rank order, with gradients that
    flow back to each rank's own slice (a contrastive loss needs the other ranks' features
    as negatives). The plain `dist.all_gather` cuts the graph; torch's autograd-aware one
    sums each slice's gradient over the ranks on the way back. So when each rank's loss
    is its share of the batch loss (its own rows against every rank's columns, the mean
    over its rows), DDP's average of the parameter gradients is the gradient of the mean
    of those losses: what one process computes on the whole batch. Dim 0 must have the
    same size on every rank. `tensor` itself in one process."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor), dim=0)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (for results that aren't sums)."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


gather_objects = all_gather_objects  # the name the tasks and the trainer use


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
