"""CNN + RNN captioner: the image sets the decoder's initial state and joins every input.

As in Show and Tell, the encoder's feature vector is mapped to the initial hidden state
of every decoder layer (and, for an LSTM, its cell state). A projection of the same
vector is also concatenated to every word embedding ("par-inject"), so the decoder
need not carry what it saw through its memory alone. Teacher forcing in training
(`forward`), one token at a time when generating (`init_state` + `step`).

`build_captioner` (registered as MODELS "captioner") assembles one from the model
config: the encoder from the `encoder*` keys, through MODELS like any classifier, and
the recurrent core from the rest. A composite model is built this way, here in models/
from its parts' sub-configs, so the task that trains it only asks for "the model".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cvtrain.models.classifiers import as_encoder
from cvtrain.registry import MODELS

if TYPE_CHECKING:
    from omegaconf import DictConfig


class Captioner(nn.Module):
    def __init__(self, encoder: nn.Module, features: int, vocab_size: int, embed_dim: int, core: nn.Module,
                 hidden_dim: int, num_layers: int, lstm: bool, dropout: float = 0.0):
        """`core` reads inputs of size 2 * embed_dim: a word embedding and the image context."""
        super().__init__()
        self.encoder = encoder
        self.context = nn.Linear(features, embed_dim)
        self.init_h = nn.Linear(features, num_layers * hidden_dim)
        self.init_c = nn.Linear(features, num_layers * hidden_dim) if lstm else None
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.core = core
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim, vocab_size)
        self.num_layers, self.hidden_dim = num_layers, hidden_dim

    def init_state(self, images: torch.Tensor) -> Any:
        """The decoder's state before the first token: ((L, B, H) or, for an LSTM, (h, c)),
        with the image context that every step reads."""
        features = self.encoder(images).flatten(1)
        shape = (features.shape[0], self.num_layers, self.hidden_dim)
        h = torch.tanh(self.init_h(features)).view(shape).transpose(0, 1).contiguous()
        context = torch.relu(self.context(features)).unsqueeze(0)  # (1, B, E): batch on dim 1, like h
        if self.init_c is None:
            return h, context
        return (h, self.init_c(features).view(shape).transpose(0, 1).contiguous()), context

    def _inputs(self, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        words = self.embed(tokens)
        return self.dropout(torch.cat([words, context.transpose(0, 1).expand(-1, words.shape[1], -1)], dim=-1))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of the token after each of `tokens` (teacher forcing)."""
        state, context = self.init_state(images)
        outputs, _ = self.core(self._inputs(tokens, context), state)
        return self.head(self.dropout(outputs))

    def step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Log-probabilities (N, V) of the next token, for greedy and beam search."""
        core_state, context = state
        outputs, core_state = self.core(self._inputs(tokens.unsqueeze(1), context), core_state)
        return self.head(outputs[:, -1]).float().log_softmax(dim=-1), (core_state, context)


class AttentionCaptioner(nn.Module):
    """Show, Attend and Tell: at every step the decoder looks at a weighted mix of the
    encoder's grid cells, weighted by how well each cell matches its current state.

    The regions are kept as (R, B, C), batch on dim 1 like the recurrent state, so beam
    search can reorder them together with it.
    """

    def __init__(self, encoder: nn.Module, features: int, grid: int, vocab_size: int, embed_dim: int,
                 core: nn.Module, hidden_dim: int, num_layers: int, lstm: bool, dropout: float = 0.0):
        """`core` reads inputs of size 2 * embed_dim: a word embedding and the attended context."""
        super().__init__()
        self.encoder, self.cells = encoder, grid * grid
        channels = features // self.cells
        self.region = nn.Linear(channels, embed_dim)
        self.init_h = nn.Linear(embed_dim, num_layers * hidden_dim)
        self.init_c = nn.Linear(embed_dim, num_layers * hidden_dim) if lstm else None
        self.query = nn.Linear(hidden_dim, embed_dim)
        self.score = nn.Linear(embed_dim, 1)
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.core, self.dropout = core, nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim + embed_dim, vocab_size)
        self.num_layers, self.hidden_dim = num_layers, hidden_dim

    def init_state(self, images: torch.Tensor) -> Any:
        batch = images.shape[0]
        grid = self.encoder(images).view(batch, -1, self.cells).transpose(1, 2)  # (B, R, C)
        regions = torch.relu(self.region(grid))  # (B, R, E)
        mean = regions.mean(dim=1)
        shape = (batch, self.num_layers, self.hidden_dim)
        h = torch.tanh(self.init_h(mean)).view(shape).transpose(0, 1).contiguous()
        core_state = h if self.init_c is None else (h, self.init_c(mean).view(shape).transpose(0, 1).contiguous())
        return core_state, regions.transpose(0, 1).contiguous()

    def _attend(self, core_state: Any, regions: torch.Tensor) -> torch.Tensor:
        h = core_state[0] if isinstance(core_state, tuple) else core_state
        query = self.query(h[-1]).unsqueeze(0)  # (1, B, E)
        weights = self.score(torch.tanh(regions + query)).softmax(dim=0)  # (R, B, 1)
        return (weights * regions).sum(dim=0)  # (B, E)

    def _step_logits(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        core_state, regions = state
        context = self._attend(core_state, regions)
        inputs = torch.cat([self.embed(tokens), context], dim=-1).unsqueeze(1)
        outputs, core_state = self.core(self.dropout(inputs), core_state)
        logits = self.head(self.dropout(torch.cat([outputs[:, -1], context], dim=-1)))
        return logits, (core_state, regions)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V), one step at a time: each step attends with the state it reached."""
        state, steps = self.init_state(images), []
        for t in range(tokens.shape[1]):
            logits, state = self._step_logits(tokens[:, t], state)
            steps.append(logits)
        return torch.stack(steps, dim=1)

    def step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        logits, state = self._step_logits(tokens, state)
        return logits.float().log_softmax(dim=-1), state


# --- assembly from the model config ---------------------------------------------------


def encoder_config(cfg: DictConfig) -> DictConfig:
    """The classifier config of a captioner's encoder, from the captioner's `encoder*`
    keys (model.encoder=resnet18 model.encoder_weights=...), so users set one model."""
    from omegaconf import OmegaConf  # here: filling MODELS should not import it (a config has it loaded)

    return OmegaConf.create({
        "name": cfg.encoder, "family": "classifier", "weights": cfg.encoder_weights,
        "freeze_backbone": cfg.freeze_encoder, "dropout": 0.0, "width": cfg.encoder_width,
    })


@MODELS.register("captioner", family="captioner")
def build_captioner(cfg: DictConfig, vocab_size: int) -> nn.Module:
    """The captioner for model=rnn|gru|lstm with task=captioning: a classifier encoder
    (model.encoder) without its head, keeping a grid of features, and a recurrent decoder
    of kind model.name; with model.attention, one that attends over the grid."""
    classifier = MODELS.get(cfg.encoder, families=("classifier",))(encoder_config(cfg), num_classes=1, in_channels=3)
    encoder, features = as_encoder(classifier, grid=cfg.encoder_grid)
    core = MODELS.get(cfg.name, families=("recurrent",))(cfg, input_size=2 * cfg.embed_dim)
    args = (vocab_size, cfg.embed_dim, core, cfg.hidden_dim, cfg.num_layers, cfg.name == "lstm")
    if cfg.attention:
        return AttentionCaptioner(encoder, features, cfg.encoder_grid, *args, dropout=cfg.dropout)
    return Captioner(encoder, features, *args, dropout=cfg.dropout)
