"""Mixed precision: which autocast dtype to use, and whether losses need a GradScaler.

bf16 and fp16 autocast run on CUDA; on a CPU, training stays in fp32 (CPU autocast is
slower than fp32 for these models), and a request for bf16/fp16 there is logged and
ignored rather than failing, so one config runs on a laptop and on a GPU node.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

log = logging.getLogger("cvtrain")


@dataclass(frozen=True)
class Precision:
    dtype: torch.dtype | None  # autocast dtype; None means fp32 without autocast
    device_type: str

    @property
    def needs_scaler(self) -> bool:
        return self.dtype is torch.float16

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def without_autocast(self):
        """Backward passes run outside autocast, as PyTorch recommends."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, enabled=False)


def resolve(requested: str, device: torch.device) -> Precision:
    """The precision to train in on `device` for `trainer.precision=requested`."""
    requested = getattr(requested, "value", requested)
    if device.type != "cuda":
        if requested in ("bf16", "fp16"):
            log.warning("trainer.precision=%s needs a CUDA GPU; training in fp32 on %s", requested, device.type)
        return Precision(None, device.type)
    if requested == "auto":
        requested = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[requested]
    return Precision(dtype, "cuda")
