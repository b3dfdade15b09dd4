"""CLIP (Radford et al., 2021), small enough for a CPU: two encoders and a temperature.

The text encoder is a causal transformer (each token sees only those before it) whose
final hidden state at the end-of-text token, after a last LayerNorm, is the sentence's
feature, as in CLIP. The image encoder is a small ViT (patches, a class token, pre-norm
blocks) or a small ResNet (torchvision's basic blocks, global average pooling instead
of CLIP's attention pooling). Linear projections map both into the joint space, and
`logit_scale` is the learnable log inverse temperature, initialised to log(1 / 0.07);
the task clamps exp(logit_scale) at 100 after each optimizer step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cvtrain.errors import UserError
from cvtrain.models.joint import at_positions, classifier_encoder, eos_positions
from cvtrain.registry import MODELS

IMAGE_ENCODERS = ("vit", "resnet", "cnn")
INIT_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)


def transformer(width: int, layers: int, heads: int) -> nn.TransformerEncoder:
    """Pre-norm blocks with GELU and no dropout, as CLIP's."""
    block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(block, layers, enable_nested_tensor=False)


class TextTransformer(nn.Module):
    """Token and position embeddings, causal blocks, the state at <eot>, a projection."""

    def __init__(self, vocab_size: int, context_length: int, width: int, layers: int, heads: int, embed_dim: int):
        super().__init__()
        self.context_length = context_length
        self.token = nn.Embedding(vocab_size, width)
        self.position = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.blocks = transformer(width, layers, heads)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.context_length:
            raise UserError(f"captions of {length} tokens exceed model.context_length={self.context_length}; "
                            f"raise it or lower dataset.max_caption_len.")
        x = self.token(tokens) + self.position[:length]
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device, dtype=x.dtype)
        x = self.norm(self.blocks(x, mask=mask, is_causal=True))
        return self.proj(at_positions(x, eos_positions(tokens)))


class VisionTransformer(nn.Module):
    """Patches of `patch` pixels, a class token, pre-norm blocks; the class token's state."""

    def __init__(self, image_size: int, patch: int, width: int, layers: int, heads: int, embed_dim: int):
        super().__init__()
        if image_size % patch:
            raise UserError(f"model.patch_size={patch} must divide dataset.image_size={image_size}.")
        self.patches = nn.Conv2d(3, width, patch, stride=patch, bias=False)
        self.cls = nn.Parameter(torch.randn(width) * width**-0.5)
        self.position = nn.Parameter(torch.randn((image_size // patch) ** 2 + 1, width) * width**-0.5)
        self.norm_pre, self.norm_post = nn.LayerNorm(width), nn.LayerNorm(width)
        self.blocks = transformer(width, layers, heads)
        self.proj = nn.Linear(width, embed_dim, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patches(images).flatten(2).transpose(1, 2)  # (B, N, W)
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], dim=1) + self.position
        x = self.blocks(self.norm_pre(x))
        return self.proj(self.norm_post(x[:, 0]))


class SmallResNet(nn.Module):
    """A full-resolution stem, then `stages` of one basic block (two 3x3 convs and a skip)
    followed by 2x2 max-pooling; channels width/4, width/2, width, width, ... as the course
    CNN's (w, 2w, 4w, 4w); global average pooling. Pooling rather than torchvision's
    stride-2 convs: every conv sees its stage's full resolution, where the thin edges that
    tell a hexagon from a circle are (on ShapesWorld at 32 pixels, measured: stride-2
    blocks left the linear probe at 0.21 after two epochs, the course CNN reached 0.40)."""

    def __init__(self, width: int, stages: int, embed_dim: int):
        super().__init__()
        from torchvision.models.resnet import BasicBlock  # here: importing torchvision takes seconds

        channels = [max(8, min(width, (width // 4) << i)) for i in range(stages)]
        layers: list[nn.Module] = [nn.Conv2d(3, channels[0], 3, padding=1, bias=False),
                                   nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True)]
        cin = channels[0]
        for cout in channels:
            skip = None if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
            layers += [BasicBlock(cin, cout, downsample=skip), nn.MaxPool2d(2, ceil_mode=True)]
            cin = cout
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.proj = nn.Linear(cin, embed_dim, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.body(images))


class CLIP(nn.Module):
    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module):
        super().__init__()
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.logit_scale = nn.Parameter(torch.tensor(INIT_LOGIT_SCALE))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_encoder(images), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_encoder(tokens), dim=-1)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both normalised embeddings and the similarity scale exp(logit_scale), in the one
        call DDP sees."""
        return self.encode_image(images), self.encode_text(tokens), self.logit_scale.exp()

    @torch.no_grad()
    def clamp_scale(self) -> None:
        """CLIP's clamp: the scale never exceeds 100, so the logits stay trainable."""
        self.logit_scale.clamp_(max=MAX_LOGIT_SCALE)


@MODELS.register("clip", family="clip")
def clip(cfg: Any, *, vocab_size: int, image_size: int) -> nn.Module:
    """model=clip: model.image_encoder=vit|resnet and a causal text transformer."""
    if cfg.image_encoder not in IMAGE_ENCODERS:
        raise UserError(f"model.image_encoder: unknown '{cfg.image_encoder}'; valid: {', '.join(IMAGE_ENCODERS)}.")
    if cfg.image_encoder == "vit":
        image = VisionTransformer(image_size, cfg.patch_size, cfg.width, cfg.layers, cfg.heads, cfg.embed_dim)
    elif cfg.image_encoder == "resnet":
        image = SmallResNet(cfg.width, cfg.layers, cfg.embed_dim)
    else:  # the course CNN of classification (model.width: its base channels)
        encoder, features = classifier_encoder("cnn", cfg.width, None, False)
        image = nn.Sequential(encoder, nn.Linear(features, cfg.embed_dim, bias=False))
    text = TextTransformer(vocab_size, cfg.context_length, cfg.text_width, cfg.text_layers, cfg.text_heads,
                           cfg.embed_dim)
    return CLIP(image, text)
