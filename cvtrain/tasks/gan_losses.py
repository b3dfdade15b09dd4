"""GAN objectives by name (`loss=non_saturating|hinge|lsgan|wgan_gp`), for the gan task.

Each builder returns a `GANLoss`: `d_loss(real_logits, fake_logits)` is what the
discriminator minimises, `g_loss(fake_logits)` what the generator minimises, both means
over the batch. A loss with `gradient_penalty` true wants `gp_weight *
gradient_penalty(D, real, fake, labels)` added to its d_loss (WGAN-GP).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cvtrain.registry import LOSSES


class GANLoss:
    """A discriminator and a generator objective on D's logits (see the subclasses)."""

    name = "gan"
    gradient_penalty = False
    # pix2pix's and CycleGAN's code writes the generator's term as criterion(D(G(x)), real):
    # BCE for "vanilla", the plain MSE for "lsgan" (without Mao et al.'s 1/2). Their L1 and
    # cycle weights (100, 10) are relative to that term, so translation scales g_loss by this.
    reference_g_scale = 1.0

    def __init__(self, gp_weight: float = 0.0, class_weight: float = 1.0, g_class_weight: float | None = None):
        self.gp_weight = float(gp_weight)
        self.class_weight = float(class_weight)  # an AC-GAN discriminator's classification loss
        # ... and the generator's: a smaller one keeps G's pull towards easily classified
        # (exaggerated, single-colour) samples weaker than D's knowledge of the classes.
        self.g_class_weight = self.class_weight if g_class_weight is None else float(g_class_weight)

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        settings = f"gp_weight={self.gp_weight}" if self.gradient_penalty else ""
        return f"{type(self).__name__}({settings})"


class NonSaturatingLoss(GANLoss):
    """Goodfellow et al. (2014): D is a real/fake classifier trained with BCE; G maximises
    log D(G(z)) instead of minimising log(1 - D(G(z))), which saturates (vanishing gradient)
    early in training when D rejects every sample. softplus(-x) = -log sigmoid(x), stable."""

    name = "non_saturating"

    def d_loss(self, real_logits, fake_logits):
        return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()

    def g_loss(self, fake_logits):
        return F.softplus(-fake_logits.float()).mean()


class HingeLoss(GANLoss):
    """Hinge loss (Lim & Ye 2017; used by SNGAN, SAGAN, BigGAN): D pushes real logits above
    1 and fake ones below -1 and stops there; G raises the fake logits."""

    name = "hinge"

    def d_loss(self, real_logits, fake_logits):
        return F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()

    def g_loss(self, fake_logits):
        return -fake_logits.float().mean()


class LeastSquaresLoss(GANLoss):
    """LSGAN (Mao et al. 2017), with their a=0, b=c=1 coding: squared errors to 1 (real) and
    0 (fake), halved. Fakes far on the right side of the boundary are still pulled in,
    so G keeps a gradient where the sigmoid of BCE has flattened."""

    name = "lsgan"
    reference_g_scale = 2.0

    def d_loss(self, real_logits, fake_logits):
        return 0.5 * ((real_logits.float() - 1) ** 2).mean() + 0.5 * (fake_logits.float() ** 2).mean()

    def g_loss(self, fake_logits):
        return 0.5 * ((fake_logits.float() - 1) ** 2).mean()


class WassersteinGPLoss(GANLoss):
    """WGAN-GP (Gulrajani et al. 2017): the critic estimates the Wasserstein-1 distance as
    E[D(real)] - E[D(fake)], kept 1-Lipschitz by a gradient penalty (weight gp_weight,
    the paper's lambda = 10) rather than WGAN's weight clipping. The paper drops batch
    norm from the critic (the penalty is per sample; BN mixes samples)."""

    name = "wgan_gp"
    gradient_penalty = True

    def d_loss(self, real_logits, fake_logits):
        return fake_logits.float().mean() - real_logits.float().mean()

    def g_loss(self, fake_logits):
        return -fake_logits.float().mean()


def gradient_penalty(discriminator, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None = None,
                     eps: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP's penalty mean((||grad_x D(x)||_2 - 1)^2) at x = eps real + (1 - eps) fake,
    eps ~ U[0, 1] per sample (Gulrajani et al. 2017, Algorithm 1), or the given `eps` (N,).

    The gradient is taken with create_graph=True, so backpropagating the penalty reaches
    D's parameters (a double backward). `discriminator` may be DDP-wrapped: it is called
    as is (never `.module`, which would skip DDP's bookkeeping), and autograd.grad asks
    only for the gradient of the input (only_inputs), so no parameter's gradient is
    accumulated or all-reduced here. Under DDP, add the penalty to the loss that is
    backpropagated once (d_loss + gp_weight * penalty), so the parameters' gradients,
    penalty included, are reduced in that single backward.
    """
    real, fake = real.detach(), fake.detach()
    if eps is None:
        eps = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    eps = eps.to(real.dtype).view(-1, *([1] * (real.dim() - 1)))
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    logits = discriminator(mixed, labels) if labels is not None else discriminator(mixed)
    if isinstance(logits, tuple):  # an AC-GAN discriminator's (logits, class logits)
        logits = logits[0]
    (grad,) = torch.autograd.grad(logits.float().sum(), mixed, create_graph=True, only_inputs=True)
    return ((grad.float().flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def _class_weights(cfg) -> dict[str, float | None]:
    """loss.class_weight for D's class term and loss.g_class_weight (default: the same) for G's."""
    g_weight = cfg.get("g_class_weight", None)
    return {"class_weight": float(cfg.get("class_weight", 1.0)),
            "g_class_weight": None if g_weight is None else float(g_weight)}


@LOSSES.register("non_saturating", family="gan")
def non_saturating(cfg) -> GANLoss:
    """The original GAN's BCE, non-saturating for G: the default."""
    return NonSaturatingLoss(**_class_weights(cfg))


@LOSSES.register("hinge", family="gan")
def hinge(cfg) -> GANLoss:
    return HingeLoss(**_class_weights(cfg))


@LOSSES.register("lsgan", family="gan")
def lsgan(cfg) -> GANLoss:
    return LeastSquaresLoss(**_class_weights(cfg))


@LOSSES.register("wgan_gp", family="gan")
def wgan_gp(cfg) -> GANLoss:
    """Wasserstein loss + gp_weight (loss.gp_weight, default 10) x gradient penalty."""
    return WassersteinGPLoss(gp_weight=float(cfg.get("gp_weight", 10.0)), **_class_weights(cfg))
