"""Mixed precision: which autocast dtype to use, and whether losses need a GradScaler.

bf16 and fp16 autocast run on CUDA. On a CPU, `auto` and `fp16` train in fp32 (a request
for fp16 is logged and ignored rather than failing, so one config runs on a laptop and on
a GPU node), while an explicit `bf16` is honoured: CPUs with native bf16 (AVX512-BF16,
AMX) run convolutions and matmuls faster under bf16 autocast (the DDPM U-Net's training
step: 145-164 against 119-132 samples/s on a 2-core Xeon), and on CPUs without it bf16 is emulated and
slower, which a warning says. bf16 needs no GradScaler.
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
    def name(self) -> str:
        """fp32, bf16 or fp16: the trainer.precision value that selects it (for logs)."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

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
    if device.type == "cpu" and requested == "bf16":
        if not _cpu_has_native_bf16():
            log.warning("trainer.precision=bf16: this CPU has no native bf16 (AVX512-BF16/AMX), so bf16 autocast "
                        "is emulated and likely slower than fp32; use trainer.precision=fp32 here")
        return Precision(torch.bfloat16, "cpu")
    if device.type != "cuda":
        if requested in ("bf16", "fp16"):
            log.warning("trainer.precision=%s needs a CUDA GPU (bf16 also runs on a CPU); training in fp32 on %s",
                        requested, device.type)
        return Precision(None, device.type)
    if requested == "auto":
        requested = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[requested]
    return Precision(dtype, "cuda")


def _cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 kernels natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
