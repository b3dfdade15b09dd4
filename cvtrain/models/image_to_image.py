"""Image-to-image networks: pix2pix's U-Net generator and PatchGAN discriminator.

Written after the pix2pix / CycleGAN reference code (junyanz/pytorch-CycleGAN-and-pix2pix,
models/networks.py), layer for layer, so the course can read one against the other:

- `UNetGenerator`: `depth` 4x4 stride-2 convolutions down (LeakyReLU 0.2, batch norm
  except on the first and the innermost), the same number of transposed convolutions
  up (ReLU, batch norm), each decoder stage fed the encoder's features of its
  resolution (the skips), dropout 0.5 in the decoder's three innermost-but-one stages
  when `dropout` > 0 (pix2pix's only noise: it keeps dropout on at test time too), tanh
  at the end (or raw logits, for a classifier over colour bins). Channels double from
  `width` up to 8 x width. At 64 pixels, depth 6 reaches 1 x 1 like the paper's 8 at 256.
- `PatchDiscriminator`: pix2pix's "basic" D, `layers` 4x4 convolutions (stride 2, then
  one stride 1) and a 1-channel map of logits, one per overlapping patch; with 3
  layers each logit sees 70 x 70 input pixels (the 70x70 PatchGAN). It judges the
  input and the output together (conditional): concatenated channels.

Builders of the `colorizer` family return {"generator": G} and, when the task asks
for it, "discriminator": D; `pix2pix` (translation) always both. CycleGAN's ResNet
generators are in cvtrain/models/cyclegan.py, with this module's PatchGAN.
"""

from __future__ import annotations

import torch
from torch import nn

from cvtrain.errors import UserError
from cvtrain.registry import MODELS


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    return nn.Identity()


class UNetGenerator(nn.Module):
    """pix2pix's U-Net (see the module docstring); `out_activation` "tanh" or "none"."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 64, depth: int = 8, norm: str = "batch",
                 dropout: float = 0.0, out_activation: str = "tanh"):
        super().__init__()
        if depth < 2:
            raise UserError(f"model.depth: the U-Net needs at least 2 stages, got {depth}; try model.depth=5.")
        self.depth = depth
        chans = [min(width * 2**i, width * 8) for i in range(depth)]
        bias = norm == "instance"  # batch norm has its own shift (the reference's use_bias rule)
        downs = [nn.Conv2d(in_channels, chans[0], 4, 2, 1, bias=bias)]
        for i in range(1, depth):
            inner = i == depth - 1
            downs.append(nn.Sequential(nn.LeakyReLU(0.2, True), nn.Conv2d(chans[i - 1], chans[i], 4, 2, 1, bias=bias),
                                       nn.Identity() if inner else _norm(norm, chans[i])))
        self.downs = nn.ModuleList(downs)
        ups = []
        for i in reversed(range(1, depth)):
            cin = chans[i] if i == depth - 1 else 2 * chans[i]
            stage = [nn.ReLU(True), nn.ConvTranspose2d(cin, chans[i - 1], 4, 2, 1, bias=bias), _norm(norm, chans[i - 1])]
            if dropout > 0 and depth - 4 < i < depth - 1:  # the reference's three dropout stages below the innermost
                stage.append(nn.Dropout(dropout))
            ups.append(nn.Sequential(*stage))
        self.ups = nn.ModuleList(ups)
        last = [nn.ReLU(True), nn.ConvTranspose2d(2 * chans[0], out_channels, 4, 2, 1)]
        self.out = nn.Sequential(*last, nn.Tanh() if out_activation == "tanh" else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2**self.depth or x.shape[-2] % 2**self.depth:
            raise UserError(f"the U-Net of depth {self.depth} needs image sides divisible by {2**self.depth}, "
                            f"got {tuple(x.shape[-2:])}; change dataset.image_size or model.depth.")
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
        x = skips.pop()
        for up in self.ups:
            x = torch.cat([up(x), skips.pop()], dim=1)
        return self.out(x)


class PatchDiscriminator(nn.Module):
    """pix2pix's PatchGAN: logits (N, 1, h, w), one per input patch (70x70 with 3 layers)."""

    def __init__(self, in_channels: int, width: int = 64, layers: int = 3, norm: str = "batch"):
        super().__init__()
        bias = norm == "instance"
        seq: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < layers else 1
            seq += [nn.Conv2d(width * prev, width * mult, 4, stride, 1, bias=bias), _norm(norm, width * mult),
                    nn.LeakyReLU(0.2, True)]
        seq.append(nn.Conv2d(width * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """The reference's 'normal' init: conv weights N(0, 0.02), batch-norm scales N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return module


def _check(cfg) -> None:
    if cfg.norm not in ("batch", "instance", "none"):
        raise UserError(f"model.norm: '{cfg.norm}' is not one of batch, instance, none; try model.norm=batch.")
    if not 0.0 <= float(cfg.dropout) < 1.0:
        raise UserError(f"model.dropout: must be in [0, 1), got {cfg.dropout}; pix2pix uses 0.5.")


def unet_and_patchgan(cfg, in_channels: int, out_channels: int, out_activation: str = "tanh",
                      discriminator_channels: int = 0) -> dict[str, nn.Module]:
    """{"generator": U-Net}, and "discriminator": a PatchGAN over `discriminator_channels`
    when that is > 0; both with the reference's initial weights."""
    _check(cfg)
    models = {"generator": init_weights(UNetGenerator(in_channels, out_channels, cfg.width, cfg.depth, cfg.norm,
                                                      float(cfg.dropout), out_activation))}
    if discriminator_channels:
        models["discriminator"] = init_weights(PatchDiscriminator(discriminator_channels, cfg.d_width, cfg.d_layers,
                                                                  cfg.norm))
    return models


@MODELS.register("colorizer", family="colorizer")
def build_colorizer(cfg, *, in_channels: int, out_channels: int, out_activation: str = "tanh",
                    discriminator_channels: int = 0) -> dict[str, nn.Module]:
    """A U-Net from L to the colour channels, and a PatchGAN over (L, colour) when asked."""
    return unet_and_patchgan(cfg, in_channels, out_channels, out_activation, discriminator_channels)


@MODELS.register("pix2pix", family="pix2pix")
def build_pix2pix(cfg, *, channels_a: int = 3, channels_b: int = 3) -> dict[str, nn.Module]:
    """pix2pix: a U-Net from A to B (tanh) and a conditional PatchGAN over (A, B)."""
    return unet_and_patchgan(cfg, channels_a, channels_b, "tanh", channels_a + channels_b)
