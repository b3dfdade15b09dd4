"""VSE++ (Faghri et al., 2018): a CNN and a GRU map images and sentences into one space.

The image is the CNN's pooled feature vector, projected linearly; the sentence is the
GRU's state at its end-of-text token, projected linearly. Both are L2-normalised, so a
dot product is a cosine similarity, which the hinge and InfoNCE losses compare.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cvtrain.errors import UserError
from cvtrain.models.joint import at_positions, classifier_encoder, eos_positions
from cvtrain.registry import MODELS

IMAGE_ENCODERS = ("cnn", "resnet18")


class SentenceGRU(nn.Module):
    """Word embeddings, a one-layer GRU (torch's fused cell), the state at <eos>, a projection."""

    def __init__(self, vocab_size: int, word_dim: int, hidden_dim: int, embed_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.gru = nn.GRU(word_dim, hidden_dim, batch_first=True)
        self.proj = nn.Linear(hidden_dim, embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(self.embed(tokens))
        return self.proj(at_positions(states, eos_positions(tokens)))


class VSE(nn.Module):
    """Image and sentence encoders into one L2-normalised space of `embed_dim`."""

    def __init__(self, image_encoder: nn.Module, features: int, text_encoder: nn.Module, embed_dim: int):
        super().__init__()
        self.image_encoder = image_encoder
        self.image_proj = nn.Linear(features, embed_dim)
        self.text_encoder = text_encoder

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.image_encoder(images).flatten(1)), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_encoder(tokens), dim=-1)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both embeddings in one call, the one DDP sees (the batch sizes may differ)."""
        return self.encode_image(images), self.encode_text(tokens)


@MODELS.register("vse", family="vse")
def vse(cfg: Any, *, vocab_size: int, image_size: int) -> nn.Module:
    """model=vse: model.image_encoder=cnn (the course CNN, model.width) or resnet18
    (torchvision, from model.backbone_weights when given)."""
    if cfg.image_encoder not in IMAGE_ENCODERS:
        raise UserError(f"model.image_encoder: unknown '{cfg.image_encoder}'; valid: {', '.join(IMAGE_ENCODERS)}.")
    encoder, features = classifier_encoder(cfg.image_encoder, cfg.width, cfg.backbone_weights, cfg.freeze_backbone)
    text = SentenceGRU(vocab_size, cfg.word_dim, cfg.hidden_dim, cfg.embed_dim)
    return VSE(encoder, features, text, cfg.embed_dim)
