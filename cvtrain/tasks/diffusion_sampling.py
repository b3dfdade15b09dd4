"""A trained denoiser as something that draws images: network + process + conditioning.

`Denoiser` ties one U-Net to its diffusion process and turns what a caller wants
(classes, a guidance scale w, a low-resolution image to upsample) into the plain
`fn(x_t, t)` the process samples with. The task uses one for its own model; a cascade in
mode=predict builds a second one from the super-resolution checkpoint (`from_checkpoint`).

Classifier-free guidance (Ho & Salimans 2022), with w as the guidance *scale*:
out = out_uncond + w (out_cond - out_uncond); w = 0 samples the unconditional model,
w = 1 the conditional one, w > 1 pushes further towards the class. Both halves run as
one batch of 2N.

Residual super-resolution (model.residual, SR3 / SRDiff's residual variants): an SR model
whose process generates r = (x_hr - bicubic(x_lr)) x model.residual_scale instead of x_hr,
and whose samples are bicubic(x_lr) + r / residual_scale. `diffusion_target` and
`to_images` are that map and its inverse; `clip_in_image_space` keeps the sampler's x̂_0
clipping where it means something, on the image.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cvtrain.errors import UserError
from cvtrain.models.diffusion_process import ClipFn, GaussianDiffusion


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> [-1, 1]."""
    return images.float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def downsample(images: torch.Tensor, scale: int) -> torch.Tensor:
    """[-1, 1] images at 1/scale of their size (antialiased bilinear), rounded to what a
    uint8 image holds: the low-res input at training time is what a base model's saved
    samples will be in a cascade."""
    size = images.shape[-1] // scale
    small = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return to_signed(to_uint8(small))


def upsample(images: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """[-1, 1] images resized to size x size (bilinear: the SR model's input; bicubic: the
    baseline; nearest: the low-res image shown at the output size)."""
    corners = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(images.float(), size=(size, size), mode=mode, **corners).clamp(-1, 1)


class Denoiser:
    """One diffusion model: `net(x_t, t, labels, lowres=, aug_level=)` and its process.
    residual_scale > 0 (an SR model): the process generates the scaled residual over the
    bicubic upsample, not the image."""

    def __init__(self, net: torch.nn.Module, process: GaussianDiffusion, num_classes: int = 0, scale: int = 1,
                 noise_aug: float = 0.0, residual_scale: float = 0.0):
        self.net, self.process = net, process
        self.num_classes, self.scale, self.noise_aug = num_classes, scale, noise_aug
        self.residual_scale = residual_scale

    @classmethod
    def from_model_config(cls, net: torch.nn.Module, process: GaussianDiffusion, model_cfg,
                          num_classes: int = 0) -> "Denoiser":
        """The Denoiser that model.* describes. One reading for the task's own network and a
        cascade's SR checkpoint, so both sample alike; a config without model.residual (a
        checkpoint saved before it existed) is not residual, as it was trained."""
        residual = bool(model_cfg.get("residual", False))
        return cls(net, process, num_classes, int(model_cfg.scale), float(model_cfg.noise_aug),
                   float(model_cfg.get("residual_scale", 0.0)) if residual else 0.0)

    @property
    def super_resolution(self) -> bool:
        return self.scale > 1

    @property
    def residual(self) -> bool:
        return self.super_resolution and self.residual_scale > 0

    # --- residual super-resolution -----------------------------------------------------
    def base_image(self, lowres: torch.Tensor, size: int) -> torch.Tensor:
        """What a residual model's residual is added to: the bicubic upsample of the clean
        low-res image, the very baseline it is scored against, so the network only has to
        generate the detail bicubic misses (bicubic rather than bilinear: the sharper
        upsample, so less is left to generate, and the same image as the baseline).
        The network's conditioning input stays the (noise-augmented) bilinear upsample: it
        determines this base, and the network is the same as a non-residual model's."""
        return upsample(lowres, size, "bicubic")

    def diffusion_target(self, images: torch.Tensor, lowres: torch.Tensor) -> torch.Tensor:
        """What the process learns to generate for [-1, 1] high-res `images`: the images, or
        (residual) (images - base) x residual_scale. The residual is small (std 0.12 on
        ShapesWorld at 32 px, 0.09 at 64): unscaled, the noise would drown it within the
        first few steps of the schedule, which is designed for data of about unit variance."""
        if not self.residual:
            return images
        return (images - self.base_image(lowres, images.shape[-1])) * self.residual_scale

    def to_images(self, x: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
        """The inverse of diffusion_target, given its base (None: not residual, x is the images)."""
        return x if base is None else base + x / self.residual_scale

    def clip_in_image_space(self, base: torch.Tensor | None) -> bool | ClipFn:
        """The sampler's x̂_0 clipping: images to [-1, 1] (True), or for a residual x̂_0,
        base + x̂_0 / scale clipped to [-1, 1] and mapped back. Clipping the scaled residual
        itself to ±1 would hold every pixel within 1 / residual_scale of bicubic."""
        if base is None:
            return True
        return lambda r: (self.to_images(r, base).clamp(-1, 1) - base) * self.residual_scale

    # --- conditioning -----------------------------------------------------------------
    def condition(self, lowres: torch.Tensor, size: int, level: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The SR network's extra inputs for [-1, 1] low-res images: the bilinear upsample,
        noised to `level` (a timestep index + 1 per image; 0: clean), and that level."""
        up = upsample(lowres, size)
        if level is None:
            level = torch.zeros(len(up), device=up.device, dtype=torch.long)
        noisy = level > 0
        if bool(noisy.any()):
            t = (level - 1).clamp(min=0)
            noise = torch.randn(up.shape, generator=generator, device=up.device)
            up = torch.where(noisy.view(-1, 1, 1, 1), self.process.q_sample(up, t, noise), up)
        return {"lowres": up, "aug_level": level.float()}

    def training_level(self, n: int, device) -> torch.Tensor:
        """Noise-conditioning augmentation (Cascaded Diffusion Models): a random level per
        image, 0 (clean) to noise_aug * T; the network is told the level."""
        top = int(round(self.noise_aug * self.process.timesteps))
        return torch.randint(0, top + 1, (n,), device=device)

    def sampling_level(self, n: int, device, fraction: float) -> torch.Tensor:
        return torch.full((n,), int(round(fraction * self.process.timesteps)), device=device, dtype=torch.long)

    def model_fn(self, labels: torch.Tensor | None, w: float, extra: dict[str, torch.Tensor]):
        """`fn(x_t, t)` for the process: the network with its conditioning, guided by w."""
        net, null = self.net, self.num_classes
        if not self.num_classes or labels is None:
            return lambda x, t: net(x, t, None, **extra)
        if w == 1:
            return lambda x, t: net(x, t, labels, **extra)
        unconditional = torch.full_like(labels, null)
        if w == 0:
            return lambda x, t: net(x, t, unconditional, **extra)
        both = torch.cat([labels, unconditional])
        doubled = {k: torch.cat([v, v]) for k, v in extra.items()}

        def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            cond, uncond = net(torch.cat([x, x]), torch.cat([t, t]), both, **doubled).float().chunk(2)
            return uncond + w * (cond - uncond)

        return guided

    # --- sampling ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, n: int, size: int, channels: int, device, labels: torch.Tensor | None = None,
                 w: float = 1.0, sampler: str = "ddim", steps: int = 50, eta: float = 0.0,
                 generator: torch.Generator | None = None, lowres: torch.Tensor | None = None,
                 aug_fraction: float = 0.0, keep: int = 0) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
        """n images in [-1, 1] (and the trajectory with keep > 0). An SR model needs `lowres`
        ([-1, 1], any size: it is upsampled to `size`)."""
        extra: dict[str, Any] = {}
        base = None
        if self.super_resolution:
            if lowres is None:
                raise UserError("a super-resolution model upsamples images: it needs low-resolution input.")
            level = self.sampling_level(n, device, aug_fraction)
            extra = self.condition(lowres.to(device), size, level, generator)
            base = self.base_image(lowres.to(device), size) if self.residual else None
        fn = self.model_fn(labels, w, extra)
        x, kept = self.process.sample(fn, (n, channels, size, size), sampler=sampler, steps=steps, eta=eta,
                                      clip=self.clip_in_image_space(base), generator=generator, device=device,
                                      keep=keep)
        return self.to_images(x, base), [(t, self.to_images(x_t, base)) for t, x_t in kept]

    # --- a second model of a cascade ---------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], where: str, device) -> tuple["Denoiser", dict[str, Any]]:
        """The EMA weights (else the trained ones) of a diffusion checkpoint, as a Denoiser,
        and what it needs to know: its output size, channels, classes, low-res size."""
        from cvtrain.config.schema import typed_section
        from cvtrain.engine.checkpoint import sampling_weights
        from cvtrain.registry import MODELS

        config = state.get("config", {})
        task_name = (config.get("task") or {}).get("name")
        if task_name != "diffusion":
            raise UserError(f"ckpt '{where}' was written by task={task_name}, not task=diffusion; "
                            "a cascade needs two diffusion checkpoints (base, then sr_ddpm).")
        model_cfg = typed_section("model", config["model"])
        meta = state.get("task") or {}
        classes = list(meta.get("class_names", []))
        num_classes = len(classes) if model_cfg.class_conditional else 0
        lowres_size = int(config["dataset"]["image_size"])
        size = lowres_size * int(model_cfg.scale)
        channels = int(meta.get("channels", 3))
        net = MODELS.get(model_cfg.name, families=("diffusion",))(model_cfg, image_size=size, channels=channels,
                                                                   num_classes=num_classes)["model"]
        net.load_state_dict(sampling_weights(state, "model")[0])
        net.to(device).eval()
        process = GaussianDiffusion.from_config(model_cfg.schedule, model_cfg.timesteps, model_cfg.prediction)
        info = {"size": size, "lowres_size": lowres_size, "channels": channels, "class_names": classes,
                "model": model_cfg.name}
        return cls.from_model_config(net, process, model_cfg, num_classes), info
