"""Which device a process trains on, and the process-wide switches that go with it."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

from cvtrain.engine.distributed import DistEnv
from cvtrain.errors import UserError


def select_device(requested: str, env: DistEnv) -> torch.device:
    """`auto`: this rank's CUDA GPU if there is one, else Apple's MPS, else the CPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", env.local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available() and not env.enabled:
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as error:
        raise UserError(f"trainer.device={requested} is not a device; use auto, cpu, cuda, cuda:N or mps.") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"trainer.device={requested} but no CUDA GPU is visible; use trainer.device=auto or cpu.")
        if device.index is None:
            device = torch.device("cuda", env.local_rank % torch.cuda.device_count())
    return device


def configure_runtime(tcfg, env: DistEnv, device: torch.device, seed: int) -> None:
    """Seeds, determinism, CPU threads and fast matmul settings for this process."""
    random.seed(seed + env.rank)
    np.random.seed((seed + env.rank) % 2**32)
    torch.manual_seed(seed + env.rank)
    if tcfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    threads = tcfg.num_threads
    if threads <= 0 and env.enabled and device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size))
        threads = max(1, (os.cpu_count() or 1) // local)  # ranks must not fight over cores
    if threads > 0:
        torch.set_num_threads(threads)


def move_batch(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """`batch` on `device`: tensors in dicts, lists and tuples; other values unchanged."""
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, dict):
        return {k: move_batch(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_batch(v, device, channels_last) for v in batch)
    return batch
