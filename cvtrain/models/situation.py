"""Situation recognition: a CNN, a verb classifier, and a noun classifier given verb and role.

The imSitu paper's baseline is a CRF with one potential per verb and per (verb, role,
noun); this is the simpler conditional model the course starts from: p(verb | image)
from one linear layer, and p(noun | image, verb, role) from an MLP that reads the image
features together with embeddings of the verb and of the role. Conditioning on the verb
lets "tool" mean different things for different activities; sharing one MLP across verbs
and roles keeps it small for imSitu's 504 verbs, 190 roles and 11,000 nouns. The image
features are a small grid of CNN features (model.encoder_grid), so which shape is next to
which is still in them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from cvtrain.models.vqa import image_encoder
from cvtrain.registry import MODELS

if TYPE_CHECKING:
    from omegaconf import DictConfig


class SituationBaseline(nn.Module):
    def __init__(self, encoder: nn.Module, features: int, num_verbs: int, num_roles: int, num_nouns: int,
                 hidden_dim: int, dropout: float):
        """The verb and role embeddings are added to the projected image features, so they
        take its size (hidden_dim)."""
        super().__init__()
        self.encoder = encoder
        self.verb_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_verbs))
        self.image_proj = nn.Linear(features, hidden_dim)
        self.verb_embed = nn.Embedding(num_verbs, hidden_dim)
        self.role_embed = nn.Embedding(num_roles + 1, hidden_dim)  # the last row: no role (padding)
        self.noun_head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                                       nn.Dropout(dropout), nn.Linear(hidden_dim, num_nouns))
        self.num_roles = num_roles

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images).flatten(1)

    def verbs(self, features: torch.Tensor) -> torch.Tensor:
        """Verb logits (B, V)."""
        return self.verb_head(features)

    def nouns(self, features: torch.Tensor, verbs: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
        """Noun logits (B, K, R, N) for K verbs (B, K) per image and their roles (B, K, R),
        -1 where a verb has fewer roles."""
        roles = torch.where(roles < 0, self.num_roles, roles)
        h = (self.image_proj(features)[:, None, None] + self.verb_embed(verbs)[:, :, None] + self.role_embed(roles))
        return self.noun_head(h)

    def forward(self, images: torch.Tensor, verbs: torch.Tensor, roles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Verb logits (B, V) and noun logits (B, K, R, N) for the given verbs (B, K)."""
        features = self.features(images)
        return self.verbs(features), self.nouns(features, verbs, roles)


@MODELS.register("situation_baseline", family="situation")
def situation_baseline(cfg: DictConfig, *, num_verbs: int, num_roles: int, num_nouns: int) -> nn.Module:
    """CNN features, a verb classifier, a noun classifier conditioned on verb and role."""
    encoder, features = image_encoder(cfg)
    return SituationBaseline(encoder, features, num_verbs, num_roles, num_nouns, cfg.hidden_dim, cfg.dropout)
