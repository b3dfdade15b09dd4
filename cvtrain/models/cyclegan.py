"""CycleGAN's networks: two ResNet generators (A -> B, B -> A) and two PatchGANs.

Written after the reference code (junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py),
layer for layer:

- `ResnetGenerator`: a 7x7 convolution (reflection padding), two 3x3 stride-2
  convolutions down, `blocks` residual blocks at a quarter of the resolution (3x3,
  reflection padding, norm, ReLU, 3x3, norm; added to the input), two transposed
  convolutions up, a 7x7 convolution and tanh. Channels `width`, 2x, 4x. Six blocks for
  128-pixel images, nine for 256 in the paper; here any size divisible by 4. Instance
  norm by default: a generator maps one image, not a batch's statistics.
- The discriminators are pix2pix's PatchGAN (cvtrain/models/image_to_image.py), here
  unconditional: each judges images of one domain alone.

The `cyclegan` builder returns four modules: generator_ab, generator_ba, discriminator_a
(real A against G_BA's fakes) and discriminator_b (real B against G_AB's).
"""

from __future__ import annotations

import torch
from torch import nn

from cvtrain.errors import UserError
from cvtrain.models.image_to_image import PatchDiscriminator, _norm, init_weights
from cvtrain.registry import MODELS


class ResnetBlock(nn.Module):
    """x + (pad, conv3x3, norm, ReLU, pad, conv3x3, norm)(x): the reference's resnet block."""

    def __init__(self, channels: int, norm: str, bias: bool):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), _norm(norm, channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), _norm(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """The reference's resnet_6blocks / resnet_9blocks (see the module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 64, blocks: int = 9, norm: str = "instance"):
        super().__init__()
        bias = norm == "instance"  # batch norm has its own shift (the reference's use_bias rule)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, width, 7, bias=bias),
                                   _norm(norm, width), nn.ReLU(True)]
        for mult in (1, 2):
            layers += [nn.Conv2d(width * mult, width * mult * 2, 3, 2, 1, bias=bias), _norm(norm, width * mult * 2),
                       nn.ReLU(True)]
        layers += [ResnetBlock(width * 4, norm, bias) for _ in range(blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(width * mult, width * mult // 2, 3, 2, 1, output_padding=1, bias=bias),
                       _norm(norm, width * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise UserError(f"the ResNet generator needs image sides divisible by 4, got {tuple(x.shape[-2:])}; "
                            "change dataset.image_size.")
        return self.net(x)


@MODELS.register("cyclegan", family="cyclegan")
def build_cyclegan(cfg, *, channels_a: int = 3, channels_b: int = 3) -> dict[str, nn.Module]:
    """G_AB, G_BA (ResNet, `model.blocks`) and D_A, D_B (PatchGAN), the reference's init."""
    if cfg.norm not in ("batch", "instance", "none"):
        raise UserError(f"model.norm: '{cfg.norm}' is not one of batch, instance, none; CycleGAN uses instance.")
    if int(cfg.blocks) < 1:
        raise UserError(f"model.blocks: must be at least 1, got {cfg.blocks}; the paper uses 6 or 9.")
    generator = lambda cin, cout: init_weights(ResnetGenerator(cin, cout, cfg.width, cfg.blocks, cfg.norm))  # noqa: E731
    critic = lambda channels: init_weights(PatchDiscriminator(channels, cfg.d_width, cfg.d_layers, cfg.norm))  # noqa: E731
    return {"generator_ab": generator(channels_a, channels_b), "generator_ba": generator(channels_b, channels_a),
            "discriminator_a": critic(channels_a), "discriminator_b": critic(channels_b)}
