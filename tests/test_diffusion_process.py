"""The Gaussian diffusion process against its closed forms, with no network: the forward
marginal q(x_t | x_0), exact recovery of x_0 from ε and v, the schedules' ends, DDIM's
determinism at η = 0 and its equality with ancestral sampling at η = 1 over all T steps.

Samplers are run on one-pixel "images" whose data distribution is a Gaussian, where the
ideal denoiser is known exactly: E[ε | x_t] = b (x_t - a μ) / (a² s² + b²) for
x_0 ~ N(μ, s²), a = √ᾱ_t, b = √(1 - ᾱ_t). A correct sampler fed that denoiser draws
N(μ, s²) again."""

from __future__ import annotations

import math

import pytest
import torch

from cvtrain.errors import UserError
from cvtrain.models.diffusion_process import GaussianDiffusion, cosine_betas, linear_betas, make_betas

MU, S = 0.3, 0.2  # the one-pixel data distribution N(MU, S²)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors, thousands of steps: with other work on the machine, torch's intra-op
    threads spin-wait for milliseconds per op; one thread keeps each test to seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _process(schedule: str = "linear", timesteps: int = 1000, target: str = "eps") -> GaussianDiffusion:
    return GaussianDiffusion.from_config(schedule, timesteps, target)


def _gaussian_denoiser(process: GaussianDiffusion):
    """The exact network output (ε or v) for x_0 ~ N(MU, S²), in float64."""

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = process.alpha_bar[t].view(-1, 1, 1, 1)
        a, b = ab.sqrt(), (1 - ab).sqrt()
        eps = b * (x - a * MU) / (a**2 * S**2 + b**2)
        if process.target == "eps":
            return eps
        x0 = (x - b * eps) / a
        return a * eps - b * x0

    return fn


def test_the_schedules_have_the_papers_ends():
    linear = linear_betas(1000)
    assert linear[0].item() == pytest.approx(1e-4) and linear[-1].item() == pytest.approx(0.02)
    assert torch.allclose(linear.diff(), torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))
    cosine = cosine_betas(1000)
    alpha_bar = torch.cumprod(1 - cosine, 0)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    uncapped = cosine < 0.999
    assert torch.allclose(alpha_bar[uncapped], f[uncapped], rtol=1e-9, atol=1e-12), "ᾱ(t) = f(t) / f(0)"
    assert cosine.max().item() == pytest.approx(0.999), "β capped at 0.999 at the very end"
    # another T keeps ᾱ_T about where T = 1000 puts it (β scaled by 1000 / T)
    assert torch.cumprod(1 - linear_betas(100), 0)[-1].item() == pytest.approx(
        torch.cumprod(1 - linear, 0)[-1].item(), rel=0.5)


def test_a_bad_schedule_or_target_is_one_clear_error():
    with pytest.raises(UserError, match="model.schedule"):
        make_betas("quadratic", 1000)
    with pytest.raises(UserError, match="at least 2 steps"):
        make_betas("linear", 1)
    with pytest.raises(UserError, match="model.prediction"):
        GaussianDiffusion(linear_betas(10), "x0")


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_the_forward_marginal_has_the_closed_form_mean_and_variance(schedule):
    """q(x_t | x_0) = N(√ᾱ_t x_0, 1 - ᾱ_t): from the formula, and from running the Markov
    chain x_t = √(1 - β_t) x_{t-1} + √β_t ε step by step on many copies of one image."""
    process = _process(schedule)
    x0 = torch.tensor([-0.8, 0.0, 0.5, 1.0], dtype=torch.float64).view(1, 4, 1, 1)
    steps = (0, 99, 499, 999)
    mean, var = process.q_mean_var(x0.expand(len(steps), -1, -1, -1), torch.tensor(steps))
    for i, t in enumerate(steps):
        ab = torch.prod(1 - process.betas[: t + 1])
        assert torch.allclose(mean[i], ab.sqrt() * x0[0], rtol=1e-12)
        assert torch.allclose(var[i], (1 - ab).expand_as(var[i]), rtol=1e-12)
    generator = torch.Generator().manual_seed(0)
    n, chain = 20000, x0.expand(20000, -1, -1, -1).clone()
    for t in range(200):
        noise = torch.randn(chain.shape, generator=generator, dtype=torch.float64)
        chain = (1 - process.betas[t]).sqrt() * chain + process.betas[t].sqrt() * noise
    mean, var = process.q_mean_var(x0, torch.tensor([199]))
    assert torch.allclose(chain.mean(0), mean[0], atol=4 * var.max().sqrt().item() / math.sqrt(n))
    assert torch.allclose(chain.var(0), var[0], rtol=0.03)
    sampled = process.q_sample(x0.expand(n, -1, -1, -1), torch.full((n,), 199),
                               torch.randn((n, 4, 1, 1), generator=generator, dtype=torch.float64))
    assert torch.allclose(sampled.mean(0), mean[0], atol=0.02) and torch.allclose(sampled.var(0), var[0], rtol=0.03)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("target", ["eps", "v"])
def test_eps_and_v_recover_x0_exactly_from_noiseless_outputs(schedule, target):
    """Given the exact target for x_t (what a perfect network outputs), split_output returns
    x_0 and ε themselves, at every t up to the last (where √ᾱ_t is ~1e-5 or less)."""
    process = _process(schedule, target=target)
    generator = torch.Generator().manual_seed(1)
    x0 = torch.rand((6, 3, 4, 4), generator=generator, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    x_t = process.q_sample(x0, t, noise)
    out = process.training_target(x0, t, noise)
    if target == "eps":
        assert torch.equal(out, noise)
    else:
        ab = process.alpha_bar[t].view(-1, 1, 1, 1)
        assert torch.allclose(out, ab.sqrt() * noise - (1 - ab).sqrt() * x0, rtol=0, atol=1e-15)
    x0_hat, eps_hat = process.split_output(out, x_t, t)
    tolerance = 1e-8 if target == "eps" else 1e-12  # ε divides by √ᾱ_T; v never divides
    assert torch.allclose(x0_hat, x0, rtol=0, atol=tolerance)
    assert torch.allclose(eps_hat, noise, rtol=0, atol=1e-12)


def test_the_loss_is_the_mse_to_the_target_and_zero_for_the_exact_output():
    process = _process(target="v")
    x0 = torch.rand(4, 1, 2, 2, dtype=torch.float64)
    t, noise = torch.tensor([3, 30, 300, 900]), torch.randn(4, 1, 2, 2, dtype=torch.float64)
    target = process.training_target(x0, t, noise)
    assert process.loss(lambda x, tt: target, x0, t, noise).item() == 0.0
    assert process.loss(lambda x, tt: target + 0.5, x0, t, noise).item() == pytest.approx(0.25)


def test_ddim_at_eta_1_over_every_step_is_the_ancestral_step():
    """σ² of DDIM with η = 1 and t_prev = t - 1 is the posterior variance β̃_t, and its mean
    the posterior mean c0 x̂_0 + ct x_t, for every t."""
    process = _process("cosine")
    generator = torch.Generator().manual_seed(2)
    x0 = torch.rand((1, 3, 2, 2), generator=generator, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    for t in range(process.timesteps - 1, -1, -1):
        x_t = process.q_sample(x0, torch.tensor([t]), eps)
        ddpm_mean, ddpm_std = process.ddpm_step(x0, x_t, t)
        ddim_mean, ddim_std = process.ddim_step(x0, eps, t, t - 1, eta=1.0)
        assert ddim_std.item() ** 2 == pytest.approx(ddpm_std.item() ** 2, rel=1e-9, abs=1e-15), t
        assert torch.allclose(ddim_mean, ddpm_mean, rtol=0, atol=1e-9), t
    assert process.ddim_timesteps(process.timesteps) == list(range(process.timesteps - 1, -1, -1))
    assert process.ddim_timesteps(5) == [999, 749, 500, 250, 0]


def test_ddim_at_eta_0_is_deterministic_and_inverts_a_single_point_exactly():
    process = _process(timesteps=100)
    x_T = torch.randn(64, 1, 1, 1, dtype=torch.float64)
    denoiser = _gaussian_denoiser(process)
    runs = [process.sample(denoiser, x_T.shape, "ddim", 20, eta=0.0, clip=False, x_T=x_T.clone(),
                           generator=torch.Generator().manual_seed(seed))[0] for seed in (0, 1)]
    assert torch.equal(runs[0], runs[1]), "η = 0 draws no noise: the same x_T gives the same image"
    noisy = [process.sample(denoiser, x_T.shape, "ddim", 20, eta=1.0, clip=False, x_T=x_T.clone(),
                            generator=torch.Generator().manual_seed(seed))[0] for seed in (0, 1)]
    assert not torch.equal(noisy[0], noisy[1])
    # data = one point x*: the ideal ε is (x_t - √ᾱ x*) / √(1 - ᾱ); DDIM lands on x* in any number of steps
    point = torch.tensor(0.37, dtype=torch.float64)

    def exact(x, t):
        ab = process.alpha_bar[t].view(-1, 1, 1, 1)
        return (x - ab.sqrt() * point) / (1 - ab).sqrt()

    for steps in (1, 3, 100):
        out, _ = process.sample(exact, x_T.shape, "ddim", steps, eta=0.0, clip=False, x_T=x_T.clone())
        assert torch.allclose(out, point.expand_as(out), atol=1e-9), steps


@pytest.mark.parametrize("target", ["eps", "v"])
def test_ancestral_and_ddim_sampling_draw_the_data_distribution(target):
    """With the exact denoiser of N(MU, S²), ancestral sampling, DDIM with η = 1 and DDIM
    with η = 0, each over all T steps, draw N(MU, S²); DDIM η = 1's variance is ancestral
    sampling's. (DDIM η = 0 in few steps narrows a narrow distribution: 50 of T = 1000 steps
    give 0.78 S², 200 give 0.95 S²; a discretisation error of the ODE, not a bug.)"""
    process = _process("linear", 1000, target)
    n = 10000
    stats = {}
    for name, sampler, steps, eta in (("ddpm", "ddpm", 0, 0.0), ("ddim1", "ddim", 1000, 1.0), ("ddim0", "ddim", 1000, 0.0)):
        x_T = torch.randn((n, 1, 1, 1), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        out, _ = process.sample(_gaussian_denoiser(process), x_T.shape, sampler, steps, eta=eta, clip=False,
                                x_T=x_T, generator=torch.Generator().manual_seed(4))
        stats[name] = (out.mean().item(), out.var().item())
    for name, (mean, var) in stats.items():
        assert mean == pytest.approx(MU, abs=4 * S / math.sqrt(n)), name
        assert var == pytest.approx(S**2, rel=0.06), name
    assert stats["ddim1"][1] == pytest.approx(stats["ddpm"][1], rel=0.03)


def test_the_trajectory_keeps_snapshots_from_noise_to_the_sample():
    process = _process(timesteps=50)
    x_T = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    out, kept = process.sample(_gaussian_denoiser(process), x_T.shape, "ddim", 10, x_T=x_T.clone(), clip=False, keep=4)
    times = [t for t, _ in kept]
    assert times[0] == 49 and times[-1] == -1 and times == sorted(times, reverse=True) and len(kept) == 5
    assert torch.equal(kept[0][1], x_T) and torch.equal(kept[-1][1], out)


def test_clip_takes_a_callable_and_defaults_to_clamping_x0_to_plus_minus_1():
    """The data here is the point 3 (outside [-1, 1]): clip=True lands on 1, clip=False on
    3, and a callable applies its own rule to every x̂_0 (the residual SR model clips its
    x̂_0 in image space through it), so clamping to [2, 2.5] lands on 2.5."""
    process = _process(timesteps=100)
    x_T = torch.randn(8, 1, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def exact(x, t):
        ab = process.alpha_bar[t].view(-1, 1, 1, 1)
        return (x - ab.sqrt() * 3.0) / (1 - ab).sqrt()

    def draw(clip):
        return process.sample(exact, x_T.shape, "ddim", 5, clip=clip, x_T=x_T.clone())[0]

    seen = []

    def own_rule(x0):
        seen.append(x0.clone())
        return x0.clamp(2.0, 2.5)

    assert torch.allclose(draw(True), torch.ones_like(x_T)) and torch.allclose(draw(False), torch.full_like(x_T, 3.0))
    assert torch.allclose(draw(own_rule), torch.full_like(x_T, 2.5)) and len(seen) == 5, "called once per step"
    assert torch.equal(draw(lambda x0: x0.clamp(-1, 1)), draw(True)), "the default is that clamp"


@pytest.mark.parametrize("target", ["eps", "v"])
def test_min_snr_weighting_is_the_x0_error_weighted_by_the_clamped_snr(target):
    """Min-SNR-γ's definition (Hang et al. 2023) is in x_0 space: each image's
    ||x̂_0 - x_0||² weighted by min(SNR_t, γ). The process trains on ε or v, so its loss
    must equal that, computed here from x̂_0 (split_output) with no weights of the process;
    and the simple loss must stay the plain MSE."""
    torch.manual_seed(0)
    gamma = 5.0
    process = GaussianDiffusion.from_config("linear", 1000, target, "min_snr", gamma)
    x0 = torch.rand(6, 3, 4, 4, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 10, 100, 400, 800, 999])  # SNR from ~1e4 (clamped hard) to ~4e-5 (untouched)
    net = lambda x, t_: 0.7 * x + 0.1  # any fixed function: a wrong output with a known x̂_0
    loss = process.loss(net, x0, t, noise)
    x_t = process.q_sample(x0, t, noise)
    x0_hat, _ = process.split_output(net(x_t, t), x_t, t)
    ab = process.alpha_bar[t]
    snr = ab / (1 - ab)
    expected = (snr.clamp(max=gamma) * (x0_hat - x0).pow(2).flatten(1).mean(1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    weights = process.loss_weights(t)
    assert weights[0] < 1e-3 and weights[-1] == pytest.approx(1.0 if target == "eps" else snr[-1].item(), rel=1e-3)
    simple = GaussianDiffusion.from_config("linear", 1000, target)
    plain = torch.nn.functional.mse_loss(net(x_t, t).float(), simple.training_target(x0, t, noise).float())
    assert simple.loss(net, x0, t, noise).item() == pytest.approx(plain.item(), rel=1e-6)


def test_a_bad_loss_weighting_is_one_clear_error():
    with pytest.raises(UserError, match="model.loss_weighting"):
        GaussianDiffusion(linear_betas(10), "eps", "p2")
    with pytest.raises(UserError, match="model.snr_gamma"):
        GaussianDiffusion(linear_betas(10), "eps", "min_snr", 0.0)
