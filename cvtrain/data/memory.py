"""In-memory datasets: whole splits held as tensors, batched by indexing.

Small course data sets (ShapesWorld, digits, MNIST, CIFAR-10) fit in memory as uint8
tensors. Indexing a whole batch at once (`batch(indices)`) skips the per-sample
__getitem__ and collate work that otherwise dominates a small model's step on a CPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset


class InMemoryDataset(Dataset):
    """Named tensors of equal length; a sample is a dict of their rows.

    `fields` maps names to tensors whose first dimension is the sample index, e.g.
    {"image": uint8 (N, C, H, W), "label": int64 (N,)}. `meta` carries what builders
    need to know about the data (class names, channels) without loading a sample.
    """

    def __init__(self, fields: dict[str, torch.Tensor], **meta: Any):
        lengths = {name: len(t) for name, t in fields.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"fields differ in length: {lengths}")
        self.fields = fields
        self.meta = meta

    def __len__(self) -> int:
        return len(next(iter(self.fields.values())))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: t[index] for name, t in self.fields.items()}

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows `indices` of every field, gathered in one indexing op per field."""
        return {name: t[indices] for name, t in self.fields.items()}

    def __getattr__(self, name: str) -> Any:
        meta = self.__dict__.get("meta", {})
        if name in meta:
            return meta[name]
        raise AttributeError(name)
