"""Generators and discriminators of the course's GANs: the original MLP GAN and DCGAN.

Every builder has the signature `build(cfg, image_size, channels, num_classes)` and
returns `{"generator": G, "discriminator": D}`, registered in the "gan" family:

- `G(z, labels=None)` maps noise (N, G.latent_dim) to images (N, channels, size, size)
  in [-1, 1] (tanh, so real images are scaled to [-1, 1] as in the DCGAN paper);
- `D(x, labels=None)` returns one logit per image, shape (N,): the losses in
  cvtrain.tasks.gan_losses decide what the logit means (probability, hinge or critic).

With classes (`num_classes` > 0; the builder's argument wins over `cfg.num_classes`)
both are class-conditional: the MLP generator concatenates a learned label embedding
to z (Mirza & Osindero 2014); DCGAN's generator modulates every batch norm by class
(conditional batch norm), and D adds the projection term <embed(y), features> to its
logit (Miyato & Koyama 2018), which conditions D far better than concatenating the
label to its input. cfg keys (read with defaults): latent_dim, width, hidden_dim,
num_classes, d_norm (dcgan's discriminator: batch; layer for a WGAN-GP critic;
spectral for spectral normalisation, the projection cGAN's; none).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cvtrain.errors import UserError
from cvtrain.registry import MODELS

DCGAN_SIZES = (32, 64)


def conditioning_classes(cfg, num_classes: int) -> int:
    """Classes to condition on: the builder's argument when > 0 (the data set's), else cfg's."""
    return int(num_classes) if num_classes and num_classes > 0 else int(cfg.get("num_classes", 0) or 0)


class LabelEmbedding(nn.Module):
    """The conditional generator's input: z concatenated with a learned embedding of y.

    The embedding has z's size and starts N(0, 1) like z, so noise and label weigh the
    same in the first layer. Without classes it is the identity on z.
    """

    def __init__(self, latent_dim: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes > 0 else None
        self.out_dim = latent_dim * (2 if num_classes > 0 else 1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.embed is None:
            return z
        if labels is None:
            raise ValueError(f"this generator is conditioned on {self.num_classes} classes: pass labels")
        return torch.cat([z, self.embed(labels)], dim=1)


class Projection(nn.Module):
    """A discriminator's output: linear(features) + <embed(y), features> (projection discriminator).

    Miyato & Koyama (2018) derive the inner product from the log-density ratio of a
    class-conditional model; the embedding starts small (N(0, 0.02), the DCGAN init)
    so the class term grows from zero instead of swamping the unconditional logit.
    """

    def __init__(self, features: int, num_classes: int, linear: bool = True):
        super().__init__()
        self.num_classes = num_classes
        # linear=False: the caller computes the unconditional logit (no unused parameters under DDP)
        self.linear = nn.Linear(features, 1) if linear else None
        self.embed = nn.Embedding(num_classes, features) if num_classes > 0 else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None, logits: torch.Tensor | None = None):
        """`logits`: an unconditional logit computed elsewhere (DCGAN's last conv) instead of the linear layer."""
        out = self.linear(features).squeeze(1) if logits is None else logits
        if self.embed is None:
            return out
        if labels is None:
            raise ValueError(f"this discriminator is conditioned on {self.num_classes} classes: pass labels")
        return out + (self.embed(labels) * features).sum(dim=1)


# --- the original GAN: fully connected networks ---------------------------------------


class MLPGenerator(nn.Module):
    """Goodfellow et al. (2014)'s generator: ReLU MLP from z to a flattened image (tanh, not
    their sigmoid, so it matches the [-1, 1] images every model here is trained on)."""

    def __init__(self, latent_dim: int, hidden_dim: int, image_size: int, channels: int, num_classes: int = 0):
        super().__init__()
        self.latent_dim, self.shape = latent_dim, (channels, image_size, image_size)
        self.condition = LabelEmbedding(latent_dim, num_classes)
        self.net = nn.Sequential(
            nn.Linear(self.condition.out_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, 2 * hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(2 * hidden_dim, math.prod(self.shape)), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.condition(z, labels)).view(-1, *self.shape)


class MLPDiscriminator(nn.Module):
    """Goodfellow et al. (2014)'s discriminator: an MLP with dropout on flattened images.
    LeakyReLU(0.2) replaces their maxout units (same role, fewer parameters); dropout
    keeps D from memorising a small training set, which they found necessary."""

    def __init__(self, hidden_dim: int, image_size: int, channels: int, num_classes: int = 0, dropout: float = 0.3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * image_size * image_size, 2 * hidden_dim), nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout(dropout),
            nn.Linear(2 * hidden_dim, hidden_dim), nn.LeakyReLU(0.2, inplace=True), nn.Dropout(dropout),
        )
        self.head = Projection(hidden_dim, num_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.net(x), labels)


@MODELS.register("mlp_gan", family="gan")
def mlp_gan(cfg, image_size: int, channels: int, num_classes: int = 0) -> dict[str, nn.Module]:
    """The original GAN's fully connected G and D (cfg: latent_dim, hidden_dim, num_classes)."""
    latent, hidden = int(cfg.get("latent_dim", 100)), int(cfg.get("hidden_dim", 256))
    classes = conditioning_classes(cfg, num_classes)
    return {
        "generator": MLPGenerator(latent, hidden, image_size, channels, classes),
        "discriminator": MLPDiscriminator(hidden, image_size, channels, classes),
    }


# --- DCGAN --------------------------------------------------------------------------


def dcgan_init(module: nn.Module) -> None:
    """Radford et al. (2016): every weight from N(0, 0.02); BN scales from N(1, 0.02), shifts 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)) and module.weight is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def dcgan_stages(image_size: int) -> int:
    """Stride-2 stages between 4x4 and the image: 3 at 64 pixels (the paper's), 2 at 32."""
    if image_size not in DCGAN_SIZES:
        valid = ", ".join(str(s) for s in DCGAN_SIZES)
        raise UserError(f"model dcgan: image size {image_size} is not supported; valid: {valid} "
                        "(dataset.image_size=64).")
    return int(math.log2(image_size)) - 3


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift depend on the class (de Vries et al. 2017; the
    projection-cGAN generator of Miyato & Koyama 2018): gamma_y = 1 + a[y], beta_y = b[y],
    a ~ N(0, 0.02) and b = 0 at the start (DCGAN's batch-norm init), so it begins as
    nearly plain batch norm. The class modulates
    every stage instead of entering beside z at the input, where a label embedding as
    large as z made the generator ignore z (one image per class)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.scale = nn.Embedding(num_classes, channels)
        self.shift = nn.Embedding(num_classes, channels)
        nn.init.normal_(self.scale.weight, 0.0, 0.02)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        gamma = 1 + self.scale(labels)[:, :, None, None]
        return self.norm(x) * gamma + self.shift(labels)[:, :, None, None]


class DCGANGenerator(nn.Module):
    """z -> 4x4 by a 4x4 transposed conv, then fractionally-strided convs doubling the size,
    halving the channels; BN and ReLU after all but the output layer, which is tanh. No
    pooling and no fully connected hidden layers: the paper's guidelines for stable training."""

    def __init__(self, latent_dim: int, width: int, image_size: int, channels: int, num_classes: int = 0):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        stages = dcgan_stages(image_size)
        cin = width * 2**stages
        self.blocks = nn.ModuleList([_Up(latent_dim, cin, num_classes, stride=1, padding=0)])
        for _ in range(stages):
            self.blocks.append(_Up(cin, cin // 2, num_classes))
            cin //= 2
        self.out = nn.Sequential(nn.ConvTranspose2d(cin, channels, 4, 2, 1, bias=False), nn.Tanh())
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes and labels is None:
            raise ValueError(f"this generator is conditioned on {self.num_classes} classes: pass labels")
        x = z[:, :, None, None]
        for block in self.blocks:
            x = block(x, labels)
        return self.out(x)


class _Up(nn.Module):
    """Transposed conv 4x4 (no bias: BN follows), BN (class-conditional with classes), ReLU."""

    def __init__(self, cin: int, cout: int, num_classes: int, stride: int = 2, padding: int = 1):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 4, stride, padding, bias=False)
        self.norm = ConditionalBatchNorm2d(cout, num_classes) if num_classes else nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        x = self.conv(x)
        x = self.norm(x, labels) if isinstance(self.norm, ConditionalBatchNorm2d) else self.norm(x)
        return self.act(x)


class DCGANDiscriminator(nn.Module):
    """Strided 4x4 convs halving the size down to 4x4, LeakyReLU(0.2) everywhere, BN on all
    but the input layer (BN on the input layer made samples oscillate in the paper);
    a 4x4 conv to one logit. With classes, the projection term uses the 4x4 features
    summed over space (Miyato & Koyama)."""

    def __init__(self, width: int, image_size: int, channels: int, num_classes: int = 0, norm: str = "batch",
                 classifier: bool = False):
        super().__init__()
        stages = dcgan_stages(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        cin = width
        for _ in range(stages):
            conv = nn.Conv2d(cin, cin * 2, 4, 2, 1, bias=norm in ("none", "spectral"))  # a norm's shift replaces the bias
            layers += [conv, *_norm(norm, cin * 2), nn.LeakyReLU(0.2, inplace=True)]
            cin *= 2
        self.features = nn.Sequential(*layers)
        self.out = nn.Conv2d(cin, 1, 4, 1, 0, bias=False)
        self.head = Projection(cin, num_classes, linear=False)
        self.classifier = nn.Linear(cin, num_classes) if classifier and num_classes else None
        self.apply(dcgan_init)  # leaves the projection's embedding at its own N(0, 0.02)
        if norm == "spectral":
            spectral_normalize(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        """The real/fake logit (N,), and with an auxiliary classifier also the class logits (N, classes)."""
        features = self.features(x)
        pooled = features.sum(dim=(2, 3))
        logits = self.head(pooled, labels, logits=self.out(features).flatten())
        if self.classifier is None:
            return logits
        return logits, self.classifier(pooled)


def _norm(norm: str, channels: int) -> list[nn.Module]:
    """The discriminator's normalisation. batch: DCGAN's. layer: for a WGAN-GP critic, whose
    penalty is per sample, which batch norm breaks by mixing the samples of a batch
    (Gulrajani et al. 2017 use layer norm: GroupNorm with one group). none: no layer."""
    if norm == "batch":
        return [nn.BatchNorm2d(channels)]
    if norm == "layer":
        return [nn.GroupNorm(1, channels)]
    if norm in ("none", "spectral"):  # spectral: applied to the weights (spectral_normalize)
        return []
    raise UserError(f"model.d_norm: unknown normalisation '{norm}'; valid: batch, layer, spectral, none.")


def spectral_normalize(module: nn.Module) -> None:
    """Spectral normalisation of every conv, linear and embedding weight (Miyato et al. 2018):
    each layer 1-Lipschitz, one power iteration per forward pass. The projection cGAN's
    discriminator (Miyato & Koyama 2018) is built this way; it keeps D from overpowering G
    without batch statistics, so it also suits per-sample losses."""
    from torch.nn.utils.parametrizations import spectral_norm

    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            spectral_norm(m)


@MODELS.register("dcgan", family="gan")
def dcgan(cfg, image_size: int, channels: int, num_classes: int = 0) -> dict[str, nn.Module]:
    """DCGAN (Radford et al. 2016) at 32 or 64 pixels (cfg: latent_dim, width, num_classes, d_norm)."""
    latent, width = int(cfg.get("latent_dim", 100)), int(cfg.get("width", 32))
    classes = conditioning_classes(cfg, num_classes)
    return {
        "generator": DCGANGenerator(latent, width, image_size, channels, classes),
        "discriminator": DCGANDiscriminator(width, image_size, channels, classes, str(cfg.get("d_norm", "batch")),
                                            classifier=bool(cfg.get("d_classifier", False))),
    }
