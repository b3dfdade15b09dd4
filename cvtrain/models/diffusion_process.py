"""The Gaussian diffusion process, apart from any network (as improved-diffusion keeps it).

The process knows the noise schedule, how to noise an image (q(x_t | x_0), closed form),
what the network is trained to predict (ε, or v = √ᾱ ε - √(1-ᾱ) x_0 of Salimans & Ho
2022), the simple MSE loss (optionally Min-SNR-γ weighted, Hang et al. 2023), and how to sample: ancestral DDPM over all T steps (Ho et al.
2020) and DDIM over any subsequence of them, η from 0 (deterministic) to 1 (Song et al.
2021). The network is any `fn(x_t, t) -> output`: classifier-free guidance, class labels
and super-resolution inputs are closed over by the caller, so nothing here depends on
what the network is or how it is conditioned.

The schedule's coefficients are kept in float64 and cast to the input's dtype when read:
recovering x_0 divides by √ᾱ_t, which is ~5e-5 at the cosine schedule's last step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from cvtrain.errors import UserError

SCHEDULES = ("linear", "cosine")
TARGETS = ("eps", "v")
WEIGHTINGS = ("simple", "min_snr")

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ClipFn = Callable[[torch.Tensor], torch.Tensor]


def clip_to_images(x0: torch.Tensor) -> torch.Tensor:
    """The samplers' default x̂_0 clipping: the process generates images, which live in [-1, 1]."""
    return x0.clamp(-1, 1)


def linear_betas(timesteps: int, start: float = 1e-4, end: float = 0.02) -> torch.Tensor:
    """Ho et al.'s schedule: β from 1e-4 to 0.02 over T = 1000 steps; for another T the
    ends are scaled by 1000 / T (improved-diffusion's rule), so ᾱ_T stays about the same."""
    scale = 1000 / timesteps
    return torch.linspace(scale * start, scale * end, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's schedule: ᾱ(t) = cos²((t/T + s) / (1 + s) · π/2), β capped at 0.999."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def make_betas(schedule: str, timesteps: int) -> torch.Tensor:
    if timesteps < 2:
        raise UserError(f"model.timesteps={timesteps}: a diffusion needs at least 2 steps (the papers use 1000).")
    if schedule == "linear":
        return linear_betas(timesteps)
    if schedule == "cosine":
        return cosine_betas(timesteps)
    from cvtrain.errors import unknown_choice

    raise unknown_choice("noise schedule", schedule, SCHEDULES, "Set model.schedule=linear|cosine.")


class GaussianDiffusion:
    """Schedule, forward noising, training target and loss, and the samplers."""

    def __init__(self, betas: torch.Tensor, target: str = "eps", weighting: str = "simple", snr_gamma: float = 5.0):
        from cvtrain.errors import unknown_choice

        if target not in TARGETS:
            raise unknown_choice("prediction target", target, TARGETS, "Set model.prediction=eps|v.")
        if weighting not in WEIGHTINGS:
            raise unknown_choice("loss weighting", weighting, WEIGHTINGS, "Set model.loss_weighting=simple|min_snr.")
        if weighting == "min_snr" and not snr_gamma > 0:
            raise UserError(f"model.snr_gamma={snr_gamma}: Min-SNR clamps the SNR at γ, so γ must be > 0 (the paper: 5).")
        self.target, self.weighting, self.snr_gamma = target, weighting, float(snr_gamma)
        self.betas = betas.double()
        self.timesteps = len(betas)
        alphas = 1 - self.betas
        self.alpha_bar = torch.cumprod(alphas, 0)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        # q(x_{t-1} | x_t, x_0) = N(c0 x_0 + ct x_t, β̃_t): the ancestral sampler's step
        self.posterior_var = self.betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)
        self.posterior_c0 = self.betas * self.alpha_bar_prev.sqrt() / (1 - self.alpha_bar)
        self.posterior_ct = (1 - self.alpha_bar_prev) * alphas.sqrt() / (1 - self.alpha_bar)

    @classmethod
    def from_config(cls, schedule: str, timesteps: int, target: str, weighting: str = "simple",
                    snr_gamma: float = 5.0) -> "GaussianDiffusion":
        return cls(make_betas(schedule, timesteps), target, weighting, snr_gamma)

    @staticmethod
    def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] shaped to broadcast over `like` (N, ...), in its dtype and device."""
        out = values.to(like.device)[t.to(like.device)]
        return out.to(like.dtype).view(-1, *[1] * (like.dim() - 1))

    # --- forward process ----------------------------------------------------------
    def q_mean_var(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I)."""
        ab = self._at(self.alpha_bar, t, x0)
        return ab.sqrt() * x0, (1 - ab).expand_as(x0)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε."""
        ab = self._at(self.alpha_bar, t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def training_target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network learns to output: ε, or v = √ᾱ_t ε - √(1 - ᾱ_t) x_0."""
        if self.target == "eps":
            return noise
        ab = self._at(self.alpha_bar, t, x0)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    def loss(self, model_fn: ModelFn, x0: torch.Tensor, t: torch.Tensor | None = None,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        """The simple loss: MSE between the network's output at a random t and its target;
        with weighting="min_snr" each image's MSE is weighted as `loss_weights` says."""
        if t is None:
            t = torch.randint(0, self.timesteps, (len(x0),), device=x0.device)
        if noise is None:
            noise = torch.randn_like(x0)
        out = model_fn(self.q_sample(x0, t, noise), t)
        target = self.training_target(x0, t, noise).float()
        if self.weighting == "simple":
            return torch.nn.functional.mse_loss(out.float(), target)
        per_image = (out.float() - target).pow(2).flatten(1).mean(1)
        return (self.loss_weights(t).to(per_image) * per_image).mean()

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """Min-SNR-γ (Hang et al. 2023): the x_0-space loss weight min(SNR_t, γ) expressed
        for the network's target, min(SNR, γ) / SNR for ε and min(SNR, γ) / (SNR + 1) for v.
        Nearly clean steps (huge SNR), which only polish texture, stop dominating the
        gradient, so the coarse structure that the noisy steps decide is learnt sooner
        (the paper: 3.4x faster convergence). 1 everywhere with weighting="simple"."""
        ab = self.alpha_bar.to(t.device)[t]
        if self.weighting == "simple":
            return torch.ones_like(ab)
        snr = ab / (1 - ab)
        clamped = snr.clamp(max=self.snr_gamma)
        return clamped / snr if self.target == "eps" else clamped / (snr + 1)

    # --- from the network's output to x_0 and ε --------------------------------------
    def split_output(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂_0, ε̂) from the network's output at x_t: exact inverses of training_target."""
        ab = self._at(self.alpha_bar, t, x_t)
        out = out.to(x_t.dtype)
        if self.target == "eps":
            return (x_t - (1 - ab).sqrt() * out) / ab.sqrt(), out
        return ab.sqrt() * x_t - (1 - ab).sqrt() * out, (1 - ab).sqrt() * x_t + ab.sqrt() * out

    def _denoised(self, model_fn: ModelFn, x_t: torch.Tensor, t: torch.Tensor, clip: bool | ClipFn):
        """(x̂_0, ε̂) at x_t, x̂_0 clipped by `clip` (True: to [-1, 1]; a callable: its own
        rule, e.g. a residual's, clipped where it becomes an image) and ε̂ made consistent."""
        x0, eps = self.split_output(model_fn(x_t, t), x_t, t)
        if clip:
            x0 = (clip_to_images if clip is True else clip)(x0)
            ab = self._at(self.alpha_bar, t, x_t)
            eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return x0, eps

    # --- samplers ----------------------------------------------------------------------
    def ddpm_step(self, x0: torch.Tensor, x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of the ancestral step x_t -> x_{t-1}: the posterior
        q(x_{t-1} | x_t, x̂_0), variance β̃_t (no noise at t = 0)."""
        index = torch.full((len(x_t),), t, device=x_t.device, dtype=torch.long)
        mean = self._at(self.posterior_c0, index, x_t) * x0 + self._at(self.posterior_ct, index, x_t) * x_t
        return mean, self._at(self.posterior_var, index, x_t).sqrt()

    def ddim_step(self, x0: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int,
                  eta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of DDIM's step x_t -> x_{t_prev} (t_prev = -1: the end):
        σ = η √((1 - ᾱ_prev)/(1 - ᾱ_t)) √(1 - ᾱ_t/ᾱ_prev); mean √ᾱ_prev x̂_0 + √(1 - ᾱ_prev - σ²) ε̂.
        With every step and η = 1, σ² is the posterior variance β̃_t of ancestral sampling."""
        ab = float(self.alpha_bar[t])
        ab_prev = float(self.alpha_bar[t_prev]) if t_prev >= 0 else 1.0
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
        mean = math.sqrt(ab_prev) * x0 + math.sqrt(max(0.0, 1 - ab_prev - sigma**2)) * eps
        return mean, torch.as_tensor(sigma, dtype=mean.dtype, device=mean.device)

    def ddim_timesteps(self, steps: int) -> list[int]:
        """`steps` timesteps from T-1 down to 0, evenly spaced (DDIM's 'linear' skip)."""
        if steps < 1:
            raise UserError(f"a sampler needs at least 1 step, not {steps}.")
        steps = min(steps, self.timesteps)
        if steps == 1:  # linspace would give [0]: one step must start from pure noise
            return [self.timesteps - 1]
        return sorted({int(round(i)) for i in torch.linspace(0, self.timesteps - 1, steps).tolist()}, reverse=True)

    @torch.no_grad()
    def sample(self, model_fn: ModelFn, shape: Sequence[int], sampler: str = "ddim", steps: int = 50,
               eta: float = 0.0, clip: bool | ClipFn = True, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", x_T: torch.Tensor | None = None,
               keep: int = 0) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
        """Images from noise: sampler "ddpm" (ancestral, all T steps) or "ddim" (`steps`
        steps, η = `eta`). Returns the samples and, with keep > 0, about `keep` snapshots
        (t, x_t) along the way (the last one is x_0), for the denoising trajectory.
        `clip`: x̂_0 clamped to [-1, 1] at every step (True), left alone (False), or mapped
        by a callable, for a process that generates something other than the images."""
        if sampler not in ("ddpm", "ddim"):
            from cvtrain.errors import unknown_choice

            raise unknown_choice("sampler", sampler, ("ddim", "ddpm"), "Set task.sampler=ddim|ddpm.")
        x = torch.randn(*shape, generator=generator, device=device) if x_T is None else x_T
        times = list(range(self.timesteps - 1, -1, -1)) if sampler == "ddpm" else self.ddim_timesteps(steps)
        kept_at = {times[int(round(i))] for i in torch.linspace(0, len(times) - 1, keep).tolist()} if keep else set()
        kept: list[tuple[int, torch.Tensor]] = []
        for i, t in enumerate(times):
            if t in kept_at:
                kept.append((t, x))
            index = torch.full((shape[0],), t, device=x.device, dtype=torch.long)
            x0, eps = self._denoised(model_fn, x, index, clip)
            if sampler == "ddpm":
                mean, std = self.ddpm_step(x0, x, t)
            else:
                mean, std = self.ddim_step(x0, eps, t, times[i + 1] if i + 1 < len(times) else -1, eta)
            if t > 0 and bool((std > 0).any()):
                x = mean + std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            else:  # the last step, or DDIM with η = 0: no noise drawn
                x = mean
        if keep:
            kept.append((-1, x))
        return x, kept
