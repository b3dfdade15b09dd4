"""CNN + RNN captioner: the image sets the decoder's initial state and joins every input.

As in Show and Tell, the encoder's feature vector is mapped to the initial hidden state
of every decoder layer (and, for an LSTM, its cell state). A projection of the same
vector is also concatenated to every word embedding ("par-inject"), so the decoder
need not carry what it saw through its memory alone. Teacher forcing in training
(`forward`), one token at a time when generating (`init_state` + `step`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


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
