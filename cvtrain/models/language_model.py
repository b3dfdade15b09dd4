"""A recurrent language model: embedding -> recurrent core -> linear over the vocabulary.

The core is any registered "recurrent" model (course or fused RNN/GRU/LSTM), so the
same module serves the three cells of the course.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class RecurrentLM(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int, core: nn.Module, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.core = core
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim, vocab_size)

    def forward(self, tokens: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Logits (B, T, V) for the next token at each position, and the final state."""
        outputs, state = self.core(self.dropout(self.embed(tokens)), state)
        return self.head(self.dropout(outputs)), state

    def step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """One generation step: log-probabilities (N, V) of the token after `tokens` (N,)."""
        logits, state = self(tokens.unsqueeze(1), state)
        return logits[:, -1].float().log_softmax(dim=-1), state
