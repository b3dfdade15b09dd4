"""Progressive growing of GANs (Karras et al. 2018): G and D start at 4x4 and grow in place.

`build(cfg, image_size, channels, num_classes)` returns `{"generator": G, "discriminator": D}`
at 4x4 (stage 0). The gan task grows both by one stage per phase with `grow()` (4 -> 8 -> ...
-> image_size; `phases()` of them in all) and sets `alpha` (0 -> 1) on both while the new
stage fades in: the output is alpha * new stage + (1 - alpha) * the previous resolution
upsampled (G) or downsampled (D), so at alpha 0 the grown nets compute what they did
before growing. Their outputs are at `resolution`, not image_size, until the last phase:
the task feeds D real images at that resolution.

Faded-out layers (the previous stage's to-RGB/from-RGB once alpha is 1, older ones always)
get no gradient: under DDP the task's ModulePolicy needs find_unused_parameters=True.

The paper's three tricks, each in its own module: equalized learning rate (weights
N(0, 1) scaled at runtime by He's constant, so Adam's per-parameter step sizes treat every
layer alike), pixel normalisation in G (instead of batch norm, against escalating
magnitudes) and minibatch standard deviation in D (a feature that lets D see a batch's
lack of variety, against mode collapse).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cvtrain.errors import UserError
from cvtrain.models.gan import LabelEmbedding, Projection, conditioning_classes
from cvtrain.registry import MODELS


class EqualizedConv2d(nn.Module):
    """Conv2d with N(0, 1) weights multiplied by sqrt(gain / fan_in) at every call (equalized lr)."""

    def __init__(self, cin: int, cout: int, kernel: int, padding: int = 0, gain: float = 2.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale, self.padding = math.sqrt(gain / (cin * kernel * kernel)), padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualizedLinear(nn.Module):
    """Linear with N(0, 1) weights multiplied by sqrt(gain / fan_in) at every call (equalized lr)."""

    def __init__(self, cin: int, cout: int, gain: float = 2.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = math.sqrt(gain / cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class PixelNorm(nn.Module):
    """Each pixel's feature vector scaled to unit mean square (the paper's eq. 2, eps 1e-8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class MinibatchStd(nn.Module):
    """Append one feature map: the standard deviation of each feature over the minibatch,
    averaged over features and pixels (the paper's section 3). A batch of near-identical
    fakes has a low value, which D can learn to reject."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = torch.sqrt(x.var(dim=0, unbiased=False) + 1e-8).mean()
        return torch.cat([x, std.expand(x.shape[0], 1, *x.shape[2:])], dim=1)


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(0.2)


def stage_channels(width: int, stage: int) -> int:
    """Channels at stage s (4 * 2^s pixels): width, halved per stage from 32x32 on (the
    paper keeps 512 up to 32x32, then halves), at least 8."""
    return max(width // 2 ** max(stage - 2, 0), 8)


def progan_phases(image_size: int) -> int:
    """Stages after 4x4; the image size must be a power of two from 8 on."""
    if image_size < 8 or image_size & (image_size - 1):
        raise UserError(f"model progan: image size {image_size} is not a power of two >= 8; "
                        "valid: 8, 16, 32, 64, 128, 256.")
    return int(math.log2(image_size)) - 2


class Growing(nn.Module):
    """What G and D share: the stage count, `alpha`, `grow()` and `phases()`."""

    def __init__(self, image_size: int, width: int):
        super().__init__()
        self.max_stage, self.width = progan_phases(image_size), width
        self.stage, self.alpha = 0, 1.0

    @property
    def resolution(self) -> int:
        return 4 * 2**self.stage

    def phases(self) -> int:
        """Phases after the first (4x4): one per resolution doubling up to image_size."""
        return self.max_stage

    def grow(self) -> None:
        """Add the next resolution stage (fading in from alpha 0; the task sets alpha)."""
        if self.stage >= self.max_stage:
            raise ValueError(f"already at the full resolution {self.resolution}")
        self.stage += 1
        self.alpha = 0.0
        self._add_stage(self.stage)

    def _add_stage(self, stage: int) -> None:
        raise NotImplementedError


class ProGANGenerator(Growing):
    """z (pixel-normalised, + label embedding) -> 4x4 -> doubling blocks of two 3x3 convs,
    each followed by LeakyReLU(0.2) and pixel norm; a 1x1 to-RGB per stage, tanh output."""

    def __init__(self, latent_dim: int, width: int, image_size: int, channels: int, num_classes: int = 0):
        super().__init__(image_size, width)
        self.latent_dim, self.channels = latent_dim, channels
        self.condition = LabelEmbedding(latent_dim, num_classes)
        c0 = stage_channels(width, 0)
        self.input = EqualizedLinear(self.condition.out_dim, c0 * 16, gain=2.0 / 16)  # the paper's 4x4 "conv"
        first = nn.Sequential(_lrelu(), PixelNorm(), EqualizedConv2d(c0, c0, 3, 1), _lrelu(), PixelNorm())
        self.blocks = nn.ModuleList([first])
        self.to_rgb = nn.ModuleList([EqualizedConv2d(c0, channels, 1, gain=1.0)])
        self.pixel_norm = PixelNorm()

    def _add_stage(self, stage: int) -> None:
        cin, cout = stage_channels(self.width, stage - 1), stage_channels(self.width, stage)
        device = self.to_rgb[-1].weight.device
        block = nn.Sequential(EqualizedConv2d(cin, cout, 3, 1), _lrelu(), PixelNorm(),
                              EqualizedConv2d(cout, cout, 3, 1), _lrelu(), PixelNorm())
        self.blocks.append(block.to(device))
        self.to_rgb.append(EqualizedConv2d(cout, self.channels, 1, gain=1.0).to(device))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.condition(self.pixel_norm(z[:, :, None, None]).flatten(1), labels)
        h = self.blocks[0](self.input(x).view(x.shape[0], -1, 4, 4))
        for block in self.blocks[1:-1]:
            h = block(_up(h))
        if self.stage == 0:
            return torch.tanh(self.to_rgb[0](h))
        new = self.to_rgb[self.stage](self.blocks[self.stage](_up(h)))
        old = _up(self.to_rgb[self.stage - 1](h))
        return torch.tanh(self.alpha * new + (1 - self.alpha) * old)


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class ProGANDiscriminator(Growing):
    """A 1x1 from-RGB per stage, halving blocks of two 3x3 convs and 2x2 average pooling,
    then minibatch std, a 3x3 and a 4x4 conv and a linear logit (+ projection term)."""

    def __init__(self, width: int, image_size: int, channels: int, num_classes: int = 0):
        super().__init__(image_size, width)
        self.channels = channels
        c0 = stage_channels(width, 0)
        self.from_rgb = nn.ModuleList([nn.Sequential(EqualizedConv2d(channels, c0, 1), _lrelu())])
        last = nn.Sequential(MinibatchStd(), EqualizedConv2d(c0 + 1, c0, 3, 1), _lrelu(),
                             EqualizedConv2d(c0, c0, 4), _lrelu(), nn.Flatten())
        self.blocks = nn.ModuleList([last])
        self.out = EqualizedLinear(c0, 1, gain=1.0)
        self.head = Projection(c0, num_classes, linear=False)  # the class term; self.out gives the logit

    def _add_stage(self, stage: int) -> None:
        cin, cout = stage_channels(self.width, stage), stage_channels(self.width, stage - 1)
        device = self.out.weight.device
        self.from_rgb.append(nn.Sequential(EqualizedConv2d(self.channels, cin, 1), _lrelu()).to(device))
        block = nn.Sequential(EqualizedConv2d(cin, cin, 3, 1), _lrelu(), EqualizedConv2d(cin, cout, 3, 1), _lrelu(),
                              nn.AvgPool2d(2))
        self.blocks.append(block.to(device))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.from_rgb[self.stage](x)
        if self.stage > 0:
            new = self.blocks[self.stage](h)
            old = self.from_rgb[self.stage - 1](F.avg_pool2d(x, 2))
            h = self.alpha * new + (1 - self.alpha) * old
            for block in reversed(self.blocks[1:self.stage]):
                h = block(h)
        features = self.blocks[0](h)
        return self.head(features, labels, logits=self.out(features).squeeze(1))


@MODELS.register("progan", family="gan")
def progan(cfg, image_size: int, channels: int, num_classes: int = 0) -> dict[str, nn.Module]:
    """Progressive GAN at 4x4, grown by the task up to image_size (cfg: latent_dim, width, num_classes)."""
    latent, width = int(cfg.get("latent_dim", 100)), int(cfg.get("width", 64))
    classes = conditioning_classes(cfg, num_classes)
    return {
        "generator": ProGANGenerator(latent, width, image_size, channels, classes),
        "discriminator": ProGANDiscriminator(width, image_size, channels, classes),
    }
