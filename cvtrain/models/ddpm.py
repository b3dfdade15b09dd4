"""The denoising U-Net of DDPM (Ho et al. 2020), class-conditional and super-resolving.

One network serves both stages of the cascade:

- `ddpm`: net(x_t, t, labels) predicts ε (or v) for images x_t at noise level t. The
  time t enters as a sinusoidal embedding through an MLP; with classes, a learned label
  embedding is added to it (one extra row, index num_classes, is the "no label" that
  classifier-free guidance trains with and samples from).
- `sr_ddpm`: the same U-Net with the low-resolution image, upsampled bilinearly to the
  output size, concatenated to x_t as extra input channels, and the noise level of that
  conditioning image (noise-conditioning augmentation, Ho et al. 2022's Cascaded
  Diffusion Models) embedded like t and added to the time embedding. With model.residual
  the network's x_t is a noisy scaled residual over the bicubic upsample rather than a
  noisy image (cvtrain/tasks/diffusion_sampling.py); the network itself is the same.

The U-Net: residual blocks (GroupNorm, SiLU, 3x3 convs; the embedding added between
the two convs), self-attention at the resolutions in `attention_resolutions` and in the
middle, stride-2 convs down and nearest-neighbour upsampling + conv up, skip connections
from every block of the way down. Each branch's last layer starts at zero, so every
block starts as the identity and the untrained network predicts 0.

Builders have the gan family's signature `build(cfg, image_size, channels, num_classes)`
and return {"model": net}; the process (schedule, target, samplers) is
cvtrain/models/diffusion_process.py, the training step cvtrain/tasks/diffusion.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cvtrain.errors import UserError
from cvtrain.registry import MODELS


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sinusoids of (possibly fractional) timesteps: (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GN-SiLU-conv, + the embedding's projection, GN-SiLU-dropout-conv (zero-init), + skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.in_layers = nn.Sequential(_norm(cin, groups), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, cout))
        self.out_layers = nn.Sequential(_norm(cout, groups), nn.SiLU(), nn.Dropout(dropout),
                                        _zero(nn.Conv2d(cout, cout, 3, padding=1)))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a (low-resolution) feature map."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        if channels % heads:
            raise UserError(f"model.heads={heads} must divide the attention channels ({channels}).")
        self.heads = heads
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (n, heads, hw, c/heads)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class Level(nn.Module):
    """Residual blocks at one resolution, each followed by attention where asked."""

    def __init__(self, blocks: list[ResBlock], attend: bool, heads: int, groups: int):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attn = nn.ModuleList([Attention(b.out_layers[-1].out_channels, heads, groups) if attend else nn.Identity()
                                   for b in blocks])


class UNet(nn.Module):
    """ε/v-prediction U-Net. forward(x_t, t, labels=None, lowres=None, aug_level=None)."""

    def __init__(self, channels: int = 3, image_size: int = 32, width: int = 32, channel_mults=(1, 2, 2),
                 num_res_blocks: int = 1, attention_resolutions=(8,), heads: int = 4, groups: int = 8,
                 dropout: float = 0.0, num_classes: int = 0, cond_channels: int = 0):
        super().__init__()
        self.channels, self.image_size, self.num_classes, self.cond_channels = channels, image_size, num_classes, cond_channels
        if image_size % (2 ** (len(channel_mults) - 1)):
            raise UserError(f"dataset.image_size={image_size} must be divisible by 2^{len(channel_mults) - 1} "
                            f"for model.channel_mults={list(channel_mults)}.")
        emb_dim = 4 * width
        self.width = width
        self.time_mlp = nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # num_classes + 1 rows: the last is "no label" (classifier-free guidance's unconditional model)
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None
        self.aug_mlp = (nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
                        if cond_channels else None)
        self.stem = nn.Conv2d(channels + cond_channels, width, 3, padding=1)

        def level(cins: list[int], cout: int, res: int) -> Level:
            return Level([ResBlock(c, cout, emb_dim, groups, dropout) for c in cins], res in attention_resolutions,
                         heads, groups)

        skips, ch, res = [width], width, image_size
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, mult in enumerate(channel_mults):
            cout = width * mult
            self.down.append(level([ch] + [cout] * (num_res_blocks - 1), cout, res))
            ch = cout
            skips += [cout] * num_res_blocks
            last = i == len(channel_mults) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(ch, ch, 3, stride=2, padding=1))
            if not last:
                skips.append(ch)
                res //= 2
        self.mid1 = ResBlock(ch, ch, emb_dim, groups, dropout)
        self.mid_attn = Attention(ch, heads, groups)
        self.mid2 = ResBlock(ch, ch, emb_dim, groups, dropout)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mults))):
            cout = width * mult
            cins = []
            for _ in range(num_res_blocks + 1):
                cins.append(ch + skips.pop())
                ch = cout
            self.up.append(level(cins, cout, res))
            first = i == 0
            self.upsample.append(nn.Identity() if first else
                                 nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)))
            if not first:
                res *= 2
        self.head = nn.Sequential(_norm(ch, groups), nn.SiLU(), _zero(nn.Conv2d(ch, channels, 3, padding=1)))

    def embedding(self, t: torch.Tensor, labels: torch.Tensor | None, aug_level: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.width))
        if self.label_emb is not None:
            if labels is None:  # unconditional: the "no label" row
                labels = torch.full((len(t),), self.num_classes, device=t.device, dtype=torch.long)
            emb = emb + self.label_emb(labels)
        if self.aug_mlp is not None:
            level = torch.zeros(len(t), device=t.device) if aug_level is None else aug_level
            emb = emb + self.aug_mlp(timestep_embedding(level, self.width))
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                lowres: torch.Tensor | None = None, aug_level: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, C, H, W) noisy images; t: (N,) timesteps; labels: (N,) class indices
        (num_classes means "no label"); lowres: (N, C, H, W) the upsampled conditioning
        image (sr_ddpm); aug_level: (N,) the timestep its noise augmentation used."""
        emb = self.embedding(t, labels, aug_level)
        if self.cond_channels:
            if lowres is None:
                raise ValueError("a super-resolution U-Net needs the low-resolution image (lowres=...)")
            x = torch.cat([x, lowres.to(x.dtype)], dim=1)
        h = self.stem(x)
        hs = [h]
        for level, down in zip(self.down, self.downsample):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(h, emb))
                hs.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for level, up in zip(self.up, self.upsample):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(torch.cat([h, hs.pop()], dim=1), emb))
            h = up(h)
        return self.head(h)


def _unet(cfg, image_size: int, channels: int, num_classes: int, cond_channels: int) -> UNet:
    return UNet(channels=channels, image_size=image_size, width=cfg.width, channel_mults=tuple(cfg.channel_mults),
                num_res_blocks=cfg.num_res_blocks, attention_resolutions=tuple(cfg.attention_resolutions),
                heads=cfg.heads, groups=cfg.groups, dropout=cfg.dropout,
                num_classes=num_classes if cfg.class_conditional else 0, cond_channels=cond_channels)


@MODELS.register("ddpm", family="diffusion")
def ddpm(cfg, image_size: int, channels: int, num_classes: int = 0) -> dict[str, nn.Module]:
    """The base model: noise -> images at dataset.image_size (class-conditional with
    model.class_conditional and a labelled data set)."""
    if cfg.scale != 1:
        raise UserError(f"model=ddpm generates at the data set's size (model.scale=1, not {cfg.scale}); "
                        "model=sr_ddpm upsamples.")
    if cfg.get("residual", False):
        raise UserError("model.residual=true predicts a residual over an upsampled low-res image, which "
                        "model=ddpm does not have: set model.residual=false (or use model=sr_ddpm).")
    return {"model": _unet(cfg, image_size, channels, num_classes, cond_channels=0)}


@MODELS.register("sr_ddpm", family="diffusion")
def sr_ddpm(cfg, image_size: int, channels: int, num_classes: int = 0) -> dict[str, nn.Module]:
    """The super-resolution stage: images at image_size from their image_size / model.scale
    version, upsampled and concatenated to the input."""
    if cfg.scale < 2:
        raise UserError(f"model=sr_ddpm needs model.scale >= 2 (the upsampling factor), not {cfg.scale}.")
    if cfg.get("residual", False) and not cfg.residual_scale > 0:
        raise UserError(f"model.residual_scale={cfg.residual_scale}: the residual is multiplied by it, so it must be "
                        "> 0 (8 brings ShapesWorld's residual near unit std).")
    return {"model": _unet(cfg, image_size, channels, num_classes, cond_channels=channels)}
