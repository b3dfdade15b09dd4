"""VQA models: a CNN for the image, an LSTM for the question, a classifier over answers.

`vqa_baseline` is the VQA paper's "deeper LSTM Q + norm I" (Antol et al. 2015, Lu et
al.'s code): the L2-normalised image features and the question's last LSTM state are
each mapped to a common size with tanh and fused by element-wise product, then an MLP
scores the answer classes. Here the image features are a small grid (model.encoder_grid)
of CNN features flattened in place, so the vector still says where things are.

`san` is Stacked Attention Networks (Yang et al. 2016): the question vector queries the
grid cells, the attended image vector is added to the query, and a second layer queries
again with the refined vector; the answer is read from the last query.

Both take the image once and any number of its questions (`owner`: which image each
question is about), so a batch of images with five questions each runs the CNN once per image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from cvtrain.models.classifiers import as_encoder
from cvtrain.registry import MODELS

if TYPE_CHECKING:
    from omegaconf import DictConfig


class QuestionEncoder(nn.Module):
    """Word embeddings (tanh, as the VQA baseline) and an LSTM; the state after each
    question's last token. Padding (id 0) is only ever at the end, so that state is the
    output at position length - 1."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, num_layers: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.hidden_dim = hidden_dim

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lstm(torch.tanh(self.embed(tokens)))
        last = (tokens != 0).sum(dim=1).clamp(min=1) - 1
        return outputs[torch.arange(tokens.shape[0], device=tokens.device), last]


class VQABaseline(nn.Module):
    def __init__(self, encoder: nn.Module, features: int, question: QuestionEncoder, fused_dim: int,
                 classifier_dim: int, num_answers: int, dropout: float):
        super().__init__()
        self.encoder, self.question = encoder, question
        self.image_proj = nn.Linear(features, fused_dim)
        self.question_proj = nn.Linear(question.hidden_dim, fused_dim)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(fused_dim, classifier_dim), nn.Tanh(),
                                        nn.Dropout(dropout), nn.Linear(classifier_dim, num_answers))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """Answer logits (M, K) of M questions, question m about image owner[m]."""
        features = self.encoder(images).flatten(1)
        # L2-normalised ("norm I"), then scaled by sqrt(size) so that entries are about 1,
        # not 1/sqrt(size): the projection then starts where tanh has a slope
        image = nn.functional.normalize(features, dim=1) * features.shape[1] ** 0.5
        fused = torch.tanh(self.image_proj(image))[owner] * torch.tanh(self.question_proj(self.question(tokens)))
        return self.classifier(fused)


class StackedAttention(nn.Module):
    """SAN: `layers` rounds of question-guided attention over the grid cells."""

    def __init__(self, encoder: nn.Module, features: int, cells: int, question: QuestionEncoder, dim: int,
                 attention_dim: int, layers: int, num_answers: int, dropout: float):
        super().__init__()
        self.encoder, self.question, self.cells = encoder, question, cells
        self.region = nn.Linear(features // cells, dim)
        self.query = nn.Linear(question.hidden_dim, dim)
        self.attend_image = nn.ModuleList(nn.Linear(dim, attention_dim) for _ in range(layers))
        self.attend_query = nn.ModuleList(nn.Linear(dim, attention_dim) for _ in range(layers))
        self.score = nn.ModuleList(nn.Linear(attention_dim, 1) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, num_answers)
        self.last_weights: torch.Tensor | None = None  # (M, layers, R): where each round looked

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        grid = self.encoder(images).view(images.shape[0], -1, self.cells).transpose(1, 2)  # (B, R, C)
        regions = torch.tanh(self.region(grid))[owner]  # (M, R, D)
        u = torch.tanh(self.query(self.question(tokens)))  # (M, D)
        weights = []
        for image_layer, query_layer, score in zip(self.attend_image, self.attend_query, self.score):
            h = torch.tanh(image_layer(regions) + query_layer(u).unsqueeze(1))
            p = score(self.dropout(h)).squeeze(-1).softmax(dim=1)  # (M, R)
            u = u + (p.unsqueeze(-1) * regions).sum(dim=1)
            weights.append(p)
        self.last_weights = torch.stack(weights, dim=1).detach()
        return self.classifier(self.dropout(u))


def image_encoder(cfg: DictConfig) -> tuple[nn.Module, int]:
    """The classifier model.encoder without its head, keeping a model.encoder_grid grid."""
    from omegaconf import OmegaConf

    sub = OmegaConf.create({"name": cfg.encoder, "family": "classifier", "weights": cfg.encoder_weights,
                            "freeze_backbone": cfg.freeze_encoder, "dropout": 0.0, "width": cfg.encoder_width})
    classifier = MODELS.get(cfg.encoder, families=("classifier",))(sub, num_classes=1, in_channels=3)
    return as_encoder(classifier, grid=cfg.encoder_grid)


def _question(cfg: DictConfig, vocab_size: int) -> QuestionEncoder:
    return QuestionEncoder(vocab_size, cfg.embed_dim, cfg.hidden_dim, cfg.num_layers, cfg.dropout)


@MODELS.register("vqa_baseline", family="vqa")
def vqa_baseline(cfg: DictConfig, *, vocab_size: int, num_answers: int) -> nn.Module:
    """CNN + LSTM, element-wise product of normalised features, MLP over answers."""
    encoder, features = image_encoder(cfg)
    return VQABaseline(encoder, features, _question(cfg, vocab_size), cfg.fused_dim, cfg.classifier_dim,
                       num_answers, cfg.dropout)


@MODELS.register("san", family="vqa")
def san(cfg: DictConfig, *, vocab_size: int, num_answers: int) -> nn.Module:
    """Stacked attention (model.attention_layers rounds) over the encoder's grid cells."""
    encoder, features = image_encoder(cfg)
    return StackedAttention(encoder, features, cfg.encoder_grid ** 2, _question(cfg, vocab_size), cfg.fused_dim,
                            cfg.attention_dim, cfg.attention_layers, num_answers, cfg.dropout)
