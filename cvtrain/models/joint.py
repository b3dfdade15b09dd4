"""What image-text embedding models share: the end-of-text position and the image encoder.

Both the VSE++ GRU and CLIP's causal transformer read a sentence as <bos> words <eos>
<pad>..., and take the state at <eos> as the sentence's summary: with a left-to-right
encoder that state has read every word and no padding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cvtrain.models.classifiers import as_encoder
from cvtrain.registry import MODELS

EOS = 2  # cvtrain.data.text.Vocabulary.EOS: the end-of-text token


def eos_positions(tokens: torch.Tensor, eos: int = EOS) -> torch.Tensor:
    """(B,) index of the first end-of-text token of each row (the last index if none)."""
    is_eos = tokens == eos
    last = torch.full_like(tokens[:, 0], tokens.shape[1] - 1)
    return torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), last)


def at_positions(states: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B, D) rows of (B, T, D) `states` at one time step per row."""
    return states[torch.arange(states.shape[0], device=states.device), positions]


def classifier_encoder(name: str, width: int, weights: str | None, freeze: bool) -> tuple[nn.Module, int]:
    """A classifier of MODELS (the course `cnn`, torchvision `resnet18`, ...) without its
    head, and its feature size; `weights` is a local torchvision file, never downloaded."""
    from omegaconf import OmegaConf  # here: filling MODELS should not import it

    cfg: Any = OmegaConf.create({"name": name, "family": "classifier", "weights": weights,
                                 "freeze_backbone": freeze, "dropout": 0.0, "width": width})
    classifier = MODELS.get(name, families=("classifier",))(cfg, num_classes=1, in_channels=3)
    return as_encoder(classifier)
