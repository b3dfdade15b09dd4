"""The colorization objectives (the loss group: l2, cgan, ab_classes), for the colorization task.

Each is what the generator's output means and how it is trained:

- `l2`: regression of ab (tanh output, ab / 110) with the mean squared error. Where a
  colour is uncertain the minimiser is the conditional mean, which for hues spread
  around the ab circle is near grey: the desaturated look the course shows.
- `cgan`: pix2pix's conditional GAN: the same regression output, trained with L1
  (weight `loss.l1_weight`, 100) plus the non-saturating GAN loss of a PatchGAN that
  sees (L, ab) pairs; the discriminator's loss is halved, as in pix2pix, so it learns
  more slowly than G. A realistic colour is rewarded, an average one is not.
- `ab_classes`: classification over quantized ab bins with class rebalancing and
  annealed-mean decoding (cvtrain.tasks.ab_bins; Zhang et al. 2016).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cvtrain.registry import LOSSES
from cvtrain.tasks.gan_losses import GANLoss, NonSaturatingLoss


class Regression:
    """loss=l2: MSE on ab; no discriminator."""

    adversarial = False
    out_activation = "tanh"

    def out_channels(self) -> int:
        return 2

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """The generator's output as normalised ab (B, 2, H, W)."""
        return output.float()

    def fit(self, images: torch.Tensor) -> None:
        """Learn what the objective needs from uint8 training images (the rebalancing prior)."""

    def generator_loss(self, output, light, ab, critic=None) -> tuple[torch.Tensor, dict]:
        loss = F.mse_loss(output.float(), ab)
        return loss, {"l2": loss.detach()}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ConditionalGAN(Regression):
    """loss=cgan: L1 x l1_weight + the GAN loss of a conditional PatchGAN (pix2pix).

    The discriminator judges (condition, image) pairs: (L, ab) here, (A, B) for
    translation's pix2pix, which uses this class too. `gan` is the GAN loss (default the
    non-saturating BCE, pix2pix's "vanilla"); its generator term is scaled as the
    reference code writes it (GANLoss.reference_g_scale), so l1_weight means the same."""

    adversarial = True

    def __init__(self, l1_weight: float = 100.0, gan: GANLoss | None = None):
        self.l1_weight = float(l1_weight)
        self.gan = gan or NonSaturatingLoss()  # pix2pix's "vanilla" GAN: BCE, G maximises log D(G(x))

    def discriminator_loss(self, output, condition, target, critic) -> tuple[torch.Tensor, dict]:
        real = critic(torch.cat([condition, target], dim=1))
        fake = critic(torch.cat([condition, output.detach().float()], dim=1))
        loss = 0.5 * self.gan.d_loss(real, fake)
        return loss, {"d_real": torch.sigmoid(real.detach().float()).mean(),
                      "d_fake": torch.sigmoid(fake.detach().float()).mean()}

    def generator_loss(self, output, condition, target, critic=None) -> tuple[torch.Tensor, dict]:
        adversarial = self.gan.reference_g_scale * self.gan.g_loss(critic(torch.cat([condition, output], dim=1)))
        l1 = F.l1_loss(output.float(), target)
        return adversarial + self.l1_weight * l1, {"g_gan": adversarial.detach(), "l1": l1.detach()}


class BinClassification(Regression):
    """loss=ab_classes: rebalanced cross-entropy over ab bins, annealed-mean decoding."""

    out_activation = "none"

    def __init__(self, bin_size: float = 10.0, rebalance: float = 0.5, temperature: float = 0.38):
        from cvtrain.tasks.ab_bins import ABBins

        self.bins, self.temperature = ABBins(bin_size, rebalance), float(temperature)
        self.fitted = False

    def out_channels(self) -> int:
        return len(self.bins)

    def decode(self, output):
        return self.bins.decode(output, self.temperature)

    def fit(self, images):
        if not self.fitted:
            self.bins.fit_prior(images)
            self.fitted = True

    def generator_loss(self, output, light, ab, critic=None):
        loss = self.bins.loss(output, ab)
        return loss, {"ce": loss.detach()}

    def state_dict(self):
        return self.bins.state_dict()

    def load_state_dict(self, state):
        if "ab_weights" in state:
            self.bins.load_state_dict(state)
            self.fitted = True


@LOSSES.register("l2", family="colorization")
def l2(cfg, task_cfg=None) -> Regression:
    return Regression()


@LOSSES.register("cgan", family="colorization")
def cgan(cfg, task_cfg=None) -> ConditionalGAN:
    return ConditionalGAN(cfg.get("l1_weight", 100.0))


@LOSSES.register("ab_classes", family="colorization")
def ab_classes(cfg, task_cfg=None) -> BinClassification:
    temperature = task_cfg.get("temperature", 0.38) if task_cfg is not None else 0.38
    return BinClassification(cfg.get("bin_size", 10.0), cfg.get("rebalance", 0.5), temperature)
