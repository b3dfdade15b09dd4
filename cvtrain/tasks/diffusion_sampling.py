"""A trained denoiser as something that draws images: network + process + conditioning.

`Denoiser` ties one U-Net to its diffusion process and turns what a caller wants
(classes, a guidance scale w, a low-resolution image to upsample) into the plain
`fn(x_t, t)` the process samples with. The task uses one for its own model; a cascade in
mode=predict builds a second one from the super-resolution checkpoint (`from_checkpoint`).

Classifier-free guidance (Ho & Salimans 2022), with w as the guidance *scale*:
out = out_uncond + w (out_cond - out_uncond); w = 0 samples the unconditional model,
w = 1 the conditional one, w > 1 pushes further towards the class. Both halves run as
one batch of 2N.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cvtrain.errors import UserError
from cvtrain.models.diffusion_process import GaussianDiffusion


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
    """One diffusion model: `net(x_t, t, labels, lowres=, aug_level=)` and its process."""

    def __init__(self, net: torch.nn.Module, process: GaussianDiffusion, num_classes: int = 0, scale: int = 1,
                 noise_aug: float = 0.0):
        self.net, self.process = net, process
        self.num_classes, self.scale, self.noise_aug = num_classes, scale, noise_aug

    @property
    def super_resolution(self) -> bool:
        return self.scale > 1

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
        if self.super_resolution:
            if lowres is None:
                raise UserError("a super-resolution model upsamples images: it needs low-resolution input.")
            level = self.sampling_level(n, device, aug_fraction)
            extra = self.condition(lowres.to(device), size, level, generator)
        fn = self.model_fn(labels, w, extra)
        return self.process.sample(fn, (n, channels, size, size), sampler=sampler, steps=steps, eta=eta,
                                   generator=generator, device=device, keep=keep)

    # --- a second model of a cascade ---------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], where: str, device) -> tuple["Denoiser", dict[str, Any]]:
        """The EMA weights (else the trained ones) of a diffusion checkpoint, as a Denoiser,
        and what it needs to know: its output size, channels, classes, low-res size."""
        from cvtrain.config.schema import typed_section
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
        weights = state["models"]["model"]
        ema = (state.get("ema") or {}).get("model")
        if ema is not None:  # an AveragedModel's state: "module." + the network's keys, and n_averaged
            weights = {k.removeprefix("module."): v for k, v in ema.items() if k.startswith("module.")}
        net.load_state_dict(weights)
        net.to(device).eval()
        process = GaussianDiffusion.from_config(model_cfg.schedule, model_cfg.timesteps, model_cfg.prediction)
        info = {"size": size, "lowres_size": lowres_size, "channels": channels, "class_names": classes,
                "model": model_cfg.name}
        denoiser = cls(net, process, num_classes, int(model_cfg.scale), float(model_cfg.noise_aug))
        return denoiser, info
