"""The diffusion task: one step of ddpm and sr_ddpm with their scores and images,
classifier-free guidance and label dropout, both samplers on a tiny U-Net, a U-Net that
learns, sr_ddpm's v / cosine defaults (x̂_0 no worse than the output), its residual
prediction (the target's exact inverse, a perfect residual sampling the image, x̂_0 clipped
in image space, a tiny SR that beats bicubic, old checkpoints loading without it, the
ddpm + residual config error), DDP with two gloo ranks, resume with the EMA state, and
mode=predict of the two-checkpoint cascade. The process itself is
tests/test_diffusion_process.py's."""

from __future__ import annotations

import pytest
import torch
from conftest import cli_in_process, compose_cfg, read_jsonl, run_cli

from cvtrain.engine.trainer import Trainer
from cvtrain.models.ddpm import UNet
from cvtrain.models.diffusion_process import GaussianDiffusion
from cvtrain.registry import TASKS
from cvtrain.tasks.diffusion_sampling import Denoiser, downsample, upsample

TINY = ["task=diffusion", "dataset.num_train=32", "dataset.num_val=8", "dataset.batch_size=8", "dataset.eval_batch_size=8",
        "model.width=8", "model.timesteps=50", "task.eval_samples=8", "task.eval_steps=2",
        "task.sample_steps=2", "task.grid_size=1", "task.trajectory=3", "task.guidance_scales=[0,3]",
        "trainer.progress=none", "trainer.num_threads=1", "trainer.device=cpu", "trainer.val_every=1"]


def _trainer(tmp_path, *overrides):
    cfg = compose_cfg([*TINY, *overrides])
    return Trainer(cfg, TASKS.get("diffusion")(cfg), tmp_path)


def _random_unet(**kwargs) -> UNet:
    """A tiny U-Net whose zero-initialised last layers are drawn at random, so that its
    output depends on every input (an untrained one outputs 0 whatever it is given)."""
    torch.manual_seed(0)
    net = UNet(channels=3, image_size=8, width=8, channel_mults=(1, 2), attention_resolutions=(4,), **kwargs)
    for p in net.parameters():
        if not p.any():
            torch.nn.init.normal_(p, std=0.1)
    return net.eval()


def test_a_ddpm_step_trains_and_evaluation_scores_every_guidance_scale(tmp_path):
    trainer = _trainer(tmp_path, "trainer.max_steps=1", "trainer.ema_decay=0.9")
    before = [p.detach().clone() for p in trainer.task.models["model"].parameters()]
    results = trainer.fit()
    after = list(trainer.task.models["model"].parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "one optimizer step changed the U-Net"
    for w in ("w0", "w3"):
        assert results[f"fid_{w}"] >= 0 and 0 <= results[f"class_acc_{w}"] <= 1 and f"kid_{w}" in results
    assert results["fid"] == results["fid_w3"], "the headline scores are at task.guidance (3)"
    record = read_jsonl(tmp_path / "metrics.jsonl")[-1]
    assert 0.5 < record["train_loss"] < 2, "an untrained network predicts 0: MSE to unit Gaussian noise is ~1"
    images = tmp_path / "images"
    classes = trainer.task.class_names
    assert {f"class_{name}.png" for name in classes} | {"samples.png", "samples.gif", "trajectory.png"} <= {
        p.name for p in images.iterdir()}
    from PIL import Image

    with Image.open(images / "trajectory.png") as trajectory, Image.open(images / "samples.png") as samples:
        assert trajectory.size[0] > 3 * 32 and samples.size[1] > len(classes) * 32, "columns of t; a row per class"


def test_an_sr_ddpm_step_is_scored_against_bicubic_and_writes_its_rows(tmp_path):
    """Residual by default: after one step, and sampled in 2 DDIM steps, the SR output is
    about bicubic's (a model that generates the whole image scores ~9 dB here)."""
    trainer = _trainer(tmp_path, "model=sr_ddpm", "dataset.image_size=16", "model.width=8", "model.timesteps=50",
                       "model.channel_mults=[1,2]", "model.attention_resolutions=[16]", "trainer.max_steps=1")
    assert trainer.task.size == 32, "sr_ddpm works at dataset.image_size x model.scale"
    results = trainer.fit()
    assert {"psnr", "ssim", "psnr_bicubic", "ssim_bicubic"} <= set(results)
    assert results["psnr_bicubic"] > 15 and 0 < results["ssim_bicubic"] <= 1, "bicubic upsampling is a fair baseline"
    assert abs(results["psnr"] - results["psnr_bicubic"]) < 0.5, "one step: the residual over bicubic is still ~0"
    assert trainer.task.monitor() == ("psnr", "max")
    assert (tmp_path / "images" / "sr.png").is_file() and (tmp_path / "images" / "trajectory.png").is_file()


def test_noise_conditioning_augmentation_noises_the_input_and_tells_the_network_its_level():
    process = GaussianDiffusion.from_config("linear", 100, "eps")
    denoiser = Denoiser(torch.nn.Identity(), process, scale=2, noise_aug=0.3)
    levels = denoiser.training_level(4000, "cpu")
    assert levels.min() == 0 and levels.max() == 30, "0 (clean) to noise_aug x T"
    low = torch.zeros(2, 3, 4, 4)
    clean = denoiser.condition(low, 8, torch.tensor([0, 0]))
    assert torch.equal(clean["lowres"], torch.zeros(2, 3, 8, 8)) and clean["aug_level"].tolist() == [0, 0]
    noisy = denoiser.condition(low, 8, torch.tensor([0, 30]), torch.Generator().manual_seed(0))
    assert torch.equal(noisy["lowres"][0], clean["lowres"][0]) and noisy["lowres"][1].std() > 0.3
    assert noisy["aug_level"].tolist() == [0, 30]


def _shapes_and_lowres(n: int = 8, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """n ShapesWorld images at `size` px in [-1, 1], and their half-size versions."""
    from cvtrain.data.shapesworld import ShapesWorldSpec, load_split
    from cvtrain.tasks.diffusion_sampling import downsample, to_signed

    split = load_split("train", 32, ShapesWorldSpec(image_size=size))
    real = to_signed(torch.as_tensor(split.images[:n]).permute(0, 3, 1, 2))
    return real, downsample(real, 2)


class _PerfectResidual(torch.nn.Module):
    """A 'network' that outputs the exact v of a known diffusion target x_0 at every x_t."""

    def __init__(self, process: GaussianDiffusion, x0: torch.Tensor):
        super().__init__()
        self.process, self.x0 = process, x0

    def forward(self, x, t, labels=None, lowres=None, aug_level=None):
        ab = self.process.alpha_bar[t].float().view(-1, 1, 1, 1)
        eps = (x - ab.sqrt() * self.x0) / (1 - ab).sqrt()
        return self.process.training_target(self.x0, t, eps)


def test_the_residual_target_maps_back_exactly_and_a_perfect_residual_samples_the_image():
    """diffusion_target and to_images are inverses, and DDIM driven by the exact residual
    lands on the high-res image itself. ShapesWorld's edges are off bicubic by more than
    1 / residual_scale, so the scaled residual leaves ±1: clipping x̂_0 there (the process's
    default) would hold them near bicubic, which is why the clipping is in image space."""
    real, low = _shapes_and_lowres()
    process = GaussianDiffusion.from_config("cosine", 100, "v")
    denoiser = Denoiser(torch.nn.Identity(), process, scale=2, residual_scale=8.0)
    target, base = denoiser.diffusion_target(real, low), denoiser.base_image(low, 16)
    assert torch.allclose(denoiser.to_images(target, base), real, atol=1e-6)
    assert torch.allclose(target, (real - upsample(low, 16, "bicubic")) * 8), "the residual over bicubic, x 8"
    assert target.abs().max() > 1.5
    denoiser.net = _PerfectResidual(process, target)
    sr, kept = denoiser.generate(8, 16, 3, "cpu", steps=5, generator=torch.Generator().manual_seed(0), lowres=low,
                                 keep=3)
    assert torch.allclose(sr, real, atol=1e-4) and torch.equal(kept[-1][1], sr)
    clipped, _ = process.sample(denoiser.model_fn(None, 1.0, denoiser.condition(low, 16)), real.shape, steps=5,
                                generator=torch.Generator().manual_seed(0))
    assert (denoiser.to_images(clipped, base) - real).abs().max() > 0.1, "residual-space clipping loses the edges"


def test_a_residual_x0_is_clipped_where_it_becomes_an_image():
    denoiser = Denoiser(torch.nn.Identity(), GaussianDiffusion.from_config("cosine", 10, "v"), scale=2,
                        residual_scale=8.0)
    base = torch.tensor([0.9, -0.5, 0.9, -0.5])
    clip = denoiser.clip_in_image_space(base)
    # images 1.9 -> 1 and -1.5 -> -1 are clipped; 0.95 and -0.25 are in [-1, 1] and kept, residuals beyond ±1 too
    assert torch.allclose(clip(torch.tensor([8.0, -8.0, 0.4, 2.0])), torch.tensor([0.8, -4.0, 0.4, 2.0]))
    assert Denoiser(torch.nn.Identity(), denoiser.process, scale=2).clip_in_image_space(None) is True, \
        "a model that generates images clamps them to ±1, as before"


def test_model_ddpm_with_residual_is_one_clear_config_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli_in_process([*TINY, "model.residual=true", f"hydra.run.dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "model.residual=true" in err and "set model.residual=false" in err, err
    assert len([line for line in err.splitlines() if "residual" in line]) == 1, err
    from cvtrain.errors import UserError
    from cvtrain.registry import MODELS

    cfg = compose_cfg(["task=diffusion", "model=sr_ddpm", "model.residual_scale=0"])
    with pytest.raises(UserError, match="residual_scale=0.0"):
        MODELS.get("sr_ddpm")(cfg.model, image_size=16, channels=3)


def test_a_checkpoint_saved_before_model_residual_samples_as_it_was_trained():
    """Its saved config has no residual keys: through the cascade's loader and through the
    app's config merge (mode=eval / predict) it is not residual, so an untrained network
    (output 0) samples ~0, the image it would have drawn before; the new config's samples bicubic."""
    from omegaconf import OmegaConf

    from cvtrain.app import merge_checkpoint_config

    task = _sr_task()
    config = OmegaConf.to_container(task.cfg, resolve=True, enum_to_str=True)
    old = OmegaConf.to_container(task.cfg, resolve=True, enum_to_str=True)
    del old["model"]["residual"], old["model"]["residual_scale"]
    net = task.models["model"].eval()
    _, low = _shapes_and_lowres(4)  # 8 px: the task's dataset.image_size

    def draw(saved):
        state = {"config": saved, "models": {"model": net.state_dict()}, "task": {"channels": 3, "class_names": []}}
        denoiser, _ = Denoiser.from_checkpoint(state, "last.pt", "cpu")
        return denoiser, denoiser.generate(4, 16, 3, "cpu", steps=2, generator=torch.Generator().manual_seed(0),
                                           lowres=low)[0]

    (before, images_before), (now, images_now) = draw(old), draw(config)
    assert not before.residual and now.residual and now.residual_scale == 8.0
    assert images_before.abs().max() < 0.05 and torch.allclose(images_now, upsample(low, 16, "bicubic"), atol=0.05)
    merged = merge_checkpoint_config(task.cfg, old, [])
    assert merged.model.residual is False and merged.model.name == "sr_ddpm"
    reloaded = TASKS.get("diffusion")(merged)
    reloaded.active = {"model": net}
    assert not reloaded.denoiser().residual


def _sr_task(*overrides):
    """The diffusion task with model=sr_ddpm's own defaults (schedule, target, noise_aug),
    at 8 -> 16 px on 8 ShapesWorld images, its tiny U-Net built and active."""
    cfg = compose_cfg(["task=diffusion", "model=sr_ddpm", "dataset.image_size=8", "dataset.num_train=8",
                       "model.width=8", "model.channel_mults=[1,2]", "model.attention_resolutions=[]", *overrides])
    task = TASKS.get("diffusion")(cfg)
    torch.manual_seed(0)
    task.models = task.active = task.build_models()
    return task


def test_sr_ddpm_predicts_x0_no_worse_than_its_output_at_every_noise_level():
    """Why sr_ddpm's default is v on the cosine schedule: x̂_0 = √ᾱ x_t - √(1-ᾱ) v is off by
    at most the output's own error. With ε (x̂_0 = (x_t - √(1-ᾱ) ε̂) / √ᾱ) a short run's
    ε error of ~0.2 became x̂_0 errors of ~30 at the first sampling steps, clipped to ±1:
    the saturated noise of the README's first sr_ddpm figure."""
    process = _sr_task().process
    assert (process.target, process.timesteps) == ("v", 1000)
    t = torch.arange(1000)
    x0, noise = torch.rand(1000, 1, 1, 1, dtype=torch.float64) * 2 - 1, torch.randn(1000, 1, 1, 1, dtype=torch.float64)
    x_t, error = process.q_sample(x0, t, noise), 0.2
    x0_hat, _ = process.split_output(process.training_target(x0, t, noise) + error, x_t, t)
    assert (x0_hat - x0).abs().max() <= error + 1e-9
    eps = GaussianDiffusion.from_config("linear", 1000, "eps")
    x0_eps, _ = eps.split_output(eps.training_target(x0, t, noise) + error, eps.q_sample(x0, t, noise), t)
    assert (x0_eps - x0).abs()[-1] > 100 * error, "ε-prediction amplifies the error by 1/√ᾱ_T at the last step"


def test_a_tiny_residual_sr_ddpm_beats_bicubic_within_150_steps():
    """Through the task's own train step and evaluation sampler (so training and sampling
    see the same conditioning): 150 Adam steps on 8 images take 5-step DDIM samples of the
    residual model from below bicubic (20.6 dB measured untrained: v = 0 is the ideal
    denoiser of unit-variance data, so it samples bicubic + noise / residual_scale) to above
    it (23.1 measured; bicubic 22.3). The model that generates the whole image
    (model.residual=false) reached 15 dB with 20 steps; the ε / linear setting before it
    stayed at 7-9.5 dB even after 400 steps."""
    from cvtrain.metrics.image_quality import psnr
    from cvtrain.tasks.diffusion import _take
    from cvtrain.tasks.diffusion_sampling import to_signed, to_uint8

    task = _sr_task()
    batch = _take(task.build_dataset("train"), list(range(8)))
    optimizer = torch.optim.Adam(task.models["model"].parameters(), lr=2e-3)
    real = to_signed(batch["image"])
    low = downsample(real, 2)

    def step(name, loss):
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def score(images: torch.Tensor) -> float:
        return psnr(to_uint8(images).float() / 255, batch["image"].float() / 255).mean().item()

    def sampled() -> float:
        task.models["model"].eval()
        sr, _ = task.denoiser().generate(8, 16, 3, "cpu", None, 1.0, "ddim", 5, 0.0, torch.Generator().manual_seed(0),
                                         lowres=low)
        task.models["model"].train()
        return score(sr)

    untrained = sampled()
    for _ in range(150):
        task.train_step(batch, step)
    trained, bicubic = sampled(), score(upsample(low, 16, "bicubic"))
    assert untrained < bicubic < trained and trained > untrained + 1.5, (untrained, bicubic, trained)


def test_label_dropout_trains_the_unconditional_model_with_probability_p_uncond(tmp_path):
    trainer = _trainer(tmp_path, "task.p_uncond=0.5")
    task = trainer.task
    seen = []
    net = task.models["model"]
    net.register_forward_pre_hook(lambda module, args: seen.append(args[2].clone()))
    from cvtrain.tasks.diffusion import _take

    batch = _take(task.build_dataset("train"), list(range(32)))
    task.active = task.models
    task.train_step(batch, lambda name, loss: None)
    labels = seen[0]
    null = len(task.class_names)
    dropped = (labels == null).float().mean().item()
    assert 0.2 < dropped < 0.8, dropped
    kept = labels != null
    assert torch.equal(labels[kept], batch["label"][kept]), "the other labels are the images' own"


def test_classifier_free_guidance_mixes_the_conditional_and_unconditional_outputs():
    net = _random_unet(num_classes=3)
    process = GaussianDiffusion.from_config("linear", 50, "eps")
    denoiser = Denoiser(net, process, num_classes=3)
    x, t, labels = torch.randn(4, 3, 8, 8), torch.tensor([1, 10, 20, 49]), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        cond, uncond = net(x, t, labels), net(x, t, torch.full_like(labels, 3))
        assert not torch.allclose(cond, uncond, atol=1e-4), "the label changes the output"
        for w in (0.0, 1.0, 3.0, 7.5):
            guided = denoiser.model_fn(labels, w, {})(x, t)
            assert torch.allclose(guided, uncond + w * (cond - uncond), atol=1e-5), w
        assert torch.equal(denoiser.model_fn(None, 3.0, {})(x, t), uncond), "no labels: the unconditional model"


@pytest.mark.parametrize("sampler, steps, eta", [("ddpm", 0, 0.0), ("ddim", 5, 0.0), ("ddim", 5, 1.0)])
def test_both_samplers_draw_images_from_a_tiny_conditional_unet(sampler, steps, eta):
    net = _random_unet(num_classes=3)
    denoiser = Denoiser(net, GaussianDiffusion.from_config("cosine", 20, "v"), num_classes=3)
    labels = torch.tensor([0, 2])

    def draw(seed):
        return denoiser.generate(2, 8, 3, "cpu", labels, 3.0, sampler, steps, eta, torch.Generator().manual_seed(seed),
                                 keep=3)

    images, kept = draw(0)
    assert images.shape == (2, 3, 8, 8) and images.abs().max() <= 1 + 1e-6 and torch.isfinite(images).all()
    assert kept[0][0] == 19 and kept[-1][0] == -1 and torch.equal(kept[-1][1], images)
    assert torch.equal(draw(0)[0], images), "the same seed draws the same images"
    assert not torch.equal(draw(1)[0], images), "another seed other images"


def test_a_tiny_unet_learns_to_denoise_shapesworld():
    """50 Adam steps on 64 ShapesWorld images at 16 px take the simple loss from ~1 (the
    untrained network predicts 0) to well under half of it."""
    from cvtrain.data.shapesworld import ShapesWorldSpec, load_split
    from cvtrain.tasks.diffusion_sampling import to_signed

    split = load_split("train", 64, ShapesWorldSpec(image_size=16))
    x0 = to_signed(torch.as_tensor(split.images).permute(0, 3, 1, 2))
    torch.manual_seed(0)
    net = UNet(channels=3, image_size=16, width=16, channel_mults=(1, 2), attention_resolutions=(8,))
    process = GaussianDiffusion.from_config("linear", 1000, "eps")
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    t, noise = torch.randint(0, 1000, (64,), generator=generator), torch.randn(x0.shape, generator=generator)

    def fixed_loss() -> float:
        with torch.no_grad():
            return process.loss(lambda x, tt: net(x, tt), x0, t, noise).item()

    start = fixed_loss()
    for _ in range(50):
        loss = process.loss(lambda x, tt: net(x, tt), x0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert start == pytest.approx(1.0, abs=0.1) and fixed_loss() < 0.5 * start, (start, fixed_loss())


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ddpm", "sr_ddpm"])
def test_diffusion_trains_under_ddp_with_two_gloo_ranks(tmp_path, model):
    run = tmp_path / "run"
    extra = (["dataset.image_size=16", "model.width=8", "model.channel_mults=[1,2]", "model.attention_resolutions=[16]"]
             if model == "sr_ddpm" else [])
    done = run_cli([*TINY, f"model={model}", *extra, "trainer.devices=2", "trainer.max_steps=2", "trainer.ema_decay=0.9",
                    "logger.images=false", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["trainer"]["step"] == 2 and len(state["rng"]) == 2, "two ranks, two steps"
    record = read_jsonl(run / "metrics.jsonl")[-1]
    assert (record["fid"] > 0 and 0 <= record["class_acc"] <= 1) if model == "ddpm" else record["psnr_bicubic"] > 15


def test_resume_restores_the_ema_weights_to_those_of_an_uninterrupted_run(tmp_path):
    from conftest import flat_state

    # a stop at an epoch's end (4 steps of 8 images), and no schedule that depends on the run's length
    args = [*TINY, "trainer.ema_decay=0.9", "trainer.deterministic=true", "logger.images=false", "task.p_uncond=0.5",
            "scheduler=none", "trainer.val_every=2"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    cli_in_process([*args, "trainer.max_steps=8", f"hydra.run.dir={whole}"])
    cli_in_process([*args, "trainer.max_steps=4", f"hydra.run.dir={split}"])
    cli_in_process([*args, "trainer.max_steps=8", f"hydra.run.dir={split}", f"resume={split}"])
    a, b = (torch.load(r / "checkpoints" / "last.pt", map_location="cpu", weights_only=True) for r in (whole, split))
    assert a["trainer"]["step"] == b["trainer"]["step"] == 8
    ema_a, ema_b = flat_state(a["ema"]), flat_state(b["ema"])
    assert ema_a and ema_a.keys() == ema_b.keys()
    assert not [k for k in ema_a if not torch.equal(ema_a[k], ema_b[k])], "the resumed EMA is the uninterrupted one"
    model_a = flat_state(a["models"])
    ema_weights = {k.split("module.", 1)[1]: v for k, v in ema_a.items() if "module." in k}
    assert any(not torch.equal(v, model_a[f"model.{k}"]) for k, v in ema_weights.items() if f"model.{k}" in model_a), \
        "the EMA is an average, not a copy of the weights"


def test_predict_runs_the_cascade_from_two_checkpoints(tmp_path, capsys):
    from PIL import Image

    base, sr = tmp_path / "base", tmp_path / "sr"
    cli_in_process([*TINY, "trainer.max_steps=1", "logger.images=false", f"hydra.run.dir={base}"])
    cli_in_process([*TINY, "model=sr_ddpm", "model.width=8", "model.channel_mults=[1,2]", "model.attention_resolutions=[32]", "trainer.max_steps=1", "logger.images=false", f"hydra.run.dir={sr}"])
    b, s = base / "checkpoints" / "last.pt", sr / "checkpoints" / "last.pt"
    assert torch.load(s, map_location="cpu", weights_only=True)["config"]["model"]["residual"] is True, \
        "the cascade's SR stage is a residual one (sr_ddpm's default)"
    out = tmp_path / "cascade"
    cli_in_process(["mode=predict", f"ckpt=[{b},{s}]", "num_samples=3", "class=circle", f"hydra.run.dir={out}"])
    records = read_jsonl(out / "predictions.jsonl")
    assert [r["class"] for r in records] == ["circle"] * 3
    for record in records:
        with Image.open(record["prediction"]) as image:
            assert image.size[0] >= 64, "the SR stage's size: twice the base model's 32 px"
    assert (out / "images" / "cascade.png").is_file() and (out / "images" / "base_samples.png").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        cli_in_process(["mode=predict", f"ckpt=[{s},{b}]", "num_samples=1", f"hydra.run.dir={tmp_path / 'bad'}"])
    assert stop.value.code == 2 and "ckpt=[BASE,SR]" in capsys.readouterr().err

