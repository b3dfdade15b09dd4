"""Colorization: predict the ab channels of Lab from L with a U-Net.

The objective is the loss group's (cvtrain/tasks/colorization_losses.py): `l2`
regression, `cgan` (pix2pix: L1 + a conditional PatchGAN, the GAN task's two-optimizer
step: the discriminator steps, then the generator) or `ab_classes` (classification over
ab bins with class rebalancing, annealed-mean decoding). The batch's RGB images are
converted to Lab on the device; the output is joined with the input's L and converted
back, so every score is on RGB images: PSNR and SSIM against the originals, and the
colourfulness of outputs and originals (the point of the comparison: an L2 model
paints greyer than a GAN). best.pt is kept by PSNR.

What people look at: input | output | target triptychs of the first val images at
every evaluation (images/triptychs.png), and mode=predict's colourings of any photos
(colorized/<name>.png, and a triptych grid).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cvtrain.engine.task import ModulePolicy, Task
from cvtrain.registry import DATASETS, LOSSES, MODELS, TASKS
from cvtrain.tasks.lab import gray_rgb, join_lab, split_lab

PRIOR_IMAGES = 1000  # training images the ab_classes rebalancing prior is counted on


@TASKS.register("colorization")
class ColorizationTask(Task):
    name = "colorization"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.objective = LOSSES.get(cfg.loss.name, families=("colorization",))(cfg.loss, cfg.task)
        self._datasets: dict[str, Any] = {}

    # --- data and models ------------------------------------------------------
    def build_dataset(self, split: str):
        if split not in self._datasets:
            builder = DATASETS.get(self.cfg.dataset.name, families=("colorization",))
            self._datasets[split] = builder(self.cfg.dataset, split)
        return self._datasets[split]

    def _fit_objective(self) -> None:
        """The ab_classes prior, from the first training images (unless a checkpoint gave it)."""
        if getattr(self.objective, "fitted", True):
            return
        data = self.build_dataset("train")
        n = min(len(data), PRIOR_IMAGES)
        if hasattr(data, "batch"):
            images = data.batch(torch.arange(n))["image"]
        else:
            images = torch.stack([data[i]["image"] for i in range(n)])
        self.objective.fit(images)

    def build_models(self):
        self._fit_objective()
        builder = MODELS.get(self.cfg.model.name, families=tuple(self.cfg.task.families))
        return builder(self.cfg.model, in_channels=1, out_channels=self.objective.out_channels(),
                       out_activation=self.objective.out_activation,
                       discriminator_channels=3 if self.objective.adversarial else 0)

    def parameter_groups(self):
        return {name: module.parameters() for name, module in self.models.items()}

    def module_policy(self, name: str) -> ModulePolicy:
        return ModulePolicy(ema=name == "generator")

    # --- training -------------------------------------------------------------
    def train_step(self, batch, step):
        images = batch["image"]
        if self.cfg.task.augment:
            from cvtrain.tasks.images import random_hflip

            images = random_hflip(images)
        light, ab = split_lab(images)
        output = self.active["generator"](light)
        logs: dict[str, torch.Tensor] = {}
        critic = self.active.get("discriminator")
        if self.objective.adversarial:
            loss_d, logs = self.objective.discriminator_loss(output, light, ab, critic)
            step("discriminator", loss_d)
            logs["loss_d"] = loss_d.detach()
        loss_g, g_logs = self.objective.generator_loss(output, light, ab, critic)
        step("generator", loss_g)
        return {"loss_g": loss_g.detach(), **logs, **g_logs}

    # --- evaluation -----------------------------------------------------------
    def colorize(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the L input shown as grey RGB, the colourised RGB), uint8, of uint8 RGB images."""
        light, _ = split_lab(images)
        ab = self.objective.decode(self.active["generator"](light))
        return gray_rgb(light), join_lab(light, ab)

    def start_eval(self, split: str) -> None:
        from cvtrain.metrics.image_quality import ImageQuality

        self.quality = ImageQuality(self.device)
        self._shown: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def eval_step(self, batch) -> None:
        images = batch["image"]
        gray, output = self.colorize(images)
        self.quality.update(output, images)
        room = self.cfg.logger.max_images - len(self._shown)
        if room > 0:
            self._shown.extend(zip(gray[:room].cpu(), output[:room].cpu(), images[:room].cpu()))

    def finish_eval(self) -> dict[str, float]:
        return self.quality.compute()

    def save_outputs(self, out_dir: Path, tag: str) -> list[Path]:
        if not self._shown:
            return []
        return [save_triptychs(self._shown, out_dir / "triptychs.png")]

    # --- prediction -----------------------------------------------------------
    @torch.inference_mode()
    def predict(self, out_dir: Path) -> list[dict[str, Any]]:
        """Each input photo (any colours; only its L is used) colourised at dataset.image_size,
        written to colorized/<stem>.png, with a grid of triptychs."""
        from cvtrain.tasks.images import expand_inputs, load_image
        from cvtrain.tasks.sample_grids import save_grid
        from cvtrain.tasks.segmentation import _unique_name

        folder = (self.run_dir or out_dir.parent) / "colorized"
        records, shown, used = [], [], set()
        for path in expand_inputs(self.cfg.input):
            image = load_image(path, self.cfg.dataset.image_size, 3).to(self.device)[None]
            gray, output = self.colorize(image)
            written = save_grid(output.cpu(), folder / _unique_name(path, used), cols=1, pad=0)
            records.append({"input": str(path), "prediction": str(written)})
            shown.append((gray[0].cpu(), output[0].cpu(), image[0].cpu()))
        if self.cfg.logger.images and shown:
            save_triptychs(shown[: self.cfg.logger.max_images], out_dir / "triptychs.png")
        return records

    # --- checkpoint state -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The objective's learnt constants (the ab_classes rebalancing weights)."""
        return self.objective.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.objective.load_state_dict(state or {})


def save_triptychs(rows: list[tuple[torch.Tensor, ...]], path: Path, titles=("input", "output", "target")) -> Path:
    """Input | output | target (or any tuple of uint8 images per row), two rows side by side."""
    from cvtrain.tasks.figures import save_image_grid

    items = [(image, title) for row in rows for image, title in zip(row, titles)]
    return save_image_grid(items, path, cols=2 * len(titles))
