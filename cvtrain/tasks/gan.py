"""Generative adversarial networks: a generator and a discriminator, two optimizers.

A growing model (progan) trains in phases, one per resolution: the trainer calls
enter_phase to grow both networks, the new stage fades in over the first half of the
phase (alpha, a function of the global step, so a resumed run fades in the same), and
the discriminator sees real images at the generator's current resolution.

The task owns the adversarial step (task.d_steps discriminator steps per generator
step, each through its own optimizer), the losses (the loss group: non_saturating,
hinge, lsgan, wgan_gp) and what people look at: a grid of samples from the same noise
at every evaluation, and those grids as a GIF over training. Evaluation scores FID and
KID of generated images against the split's real ones in the feature space of the
ShapesWorld classifier (cvtrain/metrics/generative), so best.pt is kept by FID.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import torch.nn.functional as F

from cvtrain.engine.task import ModulePolicy, Task
from cvtrain.registry import DATASETS, LOSSES, MODELS, TASKS
from cvtrain.tasks.diff_augment import diff_augment, parse_policy
from cvtrain.tasks.generated_scores import classifier_indices, feature_extractor, gathered_features
from cvtrain.tasks.image_set_meta import ImageSetMeta
from cvtrain.tasks.sample_grids import append_gif_frame, save_grid


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> [-1, 1], the range of the generator's tanh."""
    return images.float() / 127.5 - 1.0


def _outputs(out) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A discriminator's (real/fake logits, class logits or None), as float32: an AC-GAN
    discriminator (model.d_classifier) returns both, the others the logits alone."""
    logits, classes = out if isinstance(out, tuple) else (out, None)
    return logits.float(), None if classes is None else classes.float()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@TASKS.register("gan")
class GANTask(ImageSetMeta, Task):
    name = "gan"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.loss = LOSSES.get(cfg.loss.name, families=("gan",))(cfg.loss)
        self._datasets: dict[str, Any] = {}
        self._meta: dict[str, Any] = {}
        self._policy = parse_policy(cfg.task.diff_augment)  # a bad name fails before any data is built

    # --- data and models ------------------------------------------------------
    def build_dataset(self, split: str):
        if split not in self._datasets:
            builder = DATASETS.get(self.cfg.dataset.name, families=("gan",))
            self._datasets[split] = builder(self.cfg.dataset, split)
        return self._datasets[split]

    @property
    def num_classes(self) -> int:
        """0 for an unconditional model; the data set's class count when model.num_classes > 0."""
        return len(self.class_names) if self.cfg.model.num_classes > 0 else 0

    def build_models(self):
        builder = MODELS.get(self.cfg.model.name, families=tuple(self.cfg.task.families))
        return builder(self.cfg.model, image_size=self.cfg.dataset.image_size, channels=self.channels,
                       num_classes=self.num_classes)

    def parameter_groups(self):
        return {"discriminator": self.models["discriminator"].parameters(),
                "generator": self.models["generator"].parameters()}

    def steps_per_training_step(self, name: str) -> float:
        return float(self.cfg.task.d_steps) if name == "discriminator" else 1.0

    def module_policy(self, name: str) -> ModulePolicy:
        """Samples come from an EMA of the generator (when trainer.ema_decay > 0); the
        discriminator needs none. A growing model's faded-out layers get no gradient."""
        return ModulePolicy(ema=name == "generator", find_unused_parameters=self._growing())

    # --- phases (progan) ------------------------------------------------------
    def _growing(self) -> bool:
        return hasattr(self.models.get("generator"), "grow")

    def phase_at(self, epoch: int) -> int:
        if not self._growing():
            return 0
        return min(epoch // self.cfg.task.epochs_per_phase, self.models["generator"].phases())

    def enter_phase(self, phase: int, models) -> None:
        for module in models.values():
            module.grow()

    def _alpha(self) -> float:
        """The new stage's weight: 0 -> 1 over the first half of its phase, by global step."""
        if self.phase == 0:
            return 1.0
        per_epoch = max(1, len(self.build_dataset("train")) // self.cfg.dataset.batch_size)
        start = self.phase * self.cfg.task.epochs_per_phase * per_epoch
        fade = max(1, self.cfg.task.epochs_per_phase * per_epoch // 2)
        return min(1.0, max(0.0, (self.global_step - start) / fade))

    def _set_alpha(self) -> None:
        if self._growing():
            alpha = self._alpha()
            for module in (*self.models.values(), *self.active.values()):
                if hasattr(module, "grow"):
                    module.alpha = alpha

    def _at_resolution(self, images: torch.Tensor) -> torch.Tensor:
        """Real images at the generator's current resolution (area-downsampled)."""
        size = getattr(self.models["generator"], "resolution", images.shape[-1])
        return images if size == images.shape[-1] else F.interpolate(images, size=(size, size), mode="area")

    def _full_size(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images at dataset.image_size (nearest upsampling of a low phase's images)."""
        size = self.cfg.dataset.image_size
        if images.shape[-1] == size:
            return images
        return F.interpolate(images.float(), size=(size, size), mode="nearest").round().to(torch.uint8)

    # --- training -------------------------------------------------------------
    def _labels(self, batch) -> torch.Tensor | None:
        return batch["label"] if self.num_classes else None

    def _noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        latent = self.models["generator"].latent_dim
        return torch.randn(n, latent, device=self.device, generator=generator)

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        """What D sees: images through task.diff_augment's transforms (real and fake alike)."""
        return diff_augment(images, self._policy)

    def train_step(self, batch, step):
        from cvtrain.tasks.gan_losses import gradient_penalty

        self._set_alpha()
        G, D = self.active["generator"], self.active["discriminator"]
        real, labels = self._at_resolution(to_signed(batch["image"])), self._labels(batch)
        logs: dict[str, torch.Tensor] = {}
        for _ in range(self.cfg.task.d_steps):
            fake = self._augment(G(self._noise(len(real)), labels).detach())
            real_seen = self._augment(real)
            (d_real, classes_real), (d_fake, _) = _outputs(D(real_seen, labels)), _outputs(D(fake, labels))
            loss_d = self.loss.d_loss(d_real, d_fake)
            if classes_real is not None:  # AC-GAN: D learns the classes of real images
                logs["d_class"] = F.cross_entropy(classes_real, labels)
                loss_d = loss_d + self.loss.class_weight * logs["d_class"]
            if self.loss.gradient_penalty:
                penalty = gradient_penalty(D, real_seen, fake, labels)
                loss_d = loss_d + self.loss.gp_weight * penalty
                logs["gp"] = penalty
            step("discriminator", loss_d)
        d_gen, classes_gen = _outputs(D(self._augment(G(self._noise(len(real)), labels)), labels))
        loss_g = self.loss.g_loss(d_gen)
        if classes_gen is not None:  # ... and G draws images it classifies as the class asked for
            logs["g_class"] = F.cross_entropy(classes_gen, labels)
            loss_g = loss_g + self.loss.g_class_weight * logs["g_class"]
        step("generator", loss_g)
        logs = {name: value.detach() for name, value in logs.items()}
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "d_real": d_real.detach().mean(),
                "d_fake": d_fake.detach().mean(), **logs}

    # --- evaluation -----------------------------------------------------------
    def _extractor(self):
        if not hasattr(self, "_features"):
            self._features = feature_extractor(self.cfg.dataset.image_size, self.device)
        return self._features

    def _features_of(self, images: torch.Tensor):
        """Features of uint8 images in the ShapesWorld classifier's space (FID, KID)."""
        return self._extractor().extract(images.float() / 255.0)

    def start_eval(self, split: str) -> None:
        self._real, self._fake, self._batches, self._hits, self._real_phase = [], [], 0, [], []
        self._indices = classifier_indices(self._extractor(), self.class_names) if self.num_classes else None

    def _below_full_size(self) -> bool:
        """A growing generator in a phase below the data set's size."""
        size = getattr(self.models["generator"], "resolution", self.cfg.dataset.image_size)
        return size < self.cfg.dataset.image_size

    def eval_step(self, batch) -> None:
        """Features of the split's real images and of as many generated ones, from noise
        seeded by the batch's position, so every evaluation draws the same z."""
        self._set_alpha()
        real = batch["image"]
        seed = torch.Generator(device=self.device).manual_seed(self.cfg.seed * 1000 + self._batches)
        self._batches += 1
        labels = self._labels(batch)
        fake = self._full_size(to_uint8(self.active["generator"](self._noise(len(real), seed), labels)))
        self._real.append(self._features_of(real))
        self._fake.append(self._features_of(fake))
        if self._below_full_size():  # also against the real images as this phase's D sees them
            seen = self._full_size(to_uint8(self._at_resolution(to_signed(real))))
            self._real_phase.append(self._features_of(seen))
        if self._indices is not None:  # was each sample drawn as the class asked for?
            drawn = torch.from_numpy(self._extractor().classify(self._fake[-1]))
            self._hits.append((drawn == self._indices[labels.cpu()]).numpy())

    def finish_eval(self) -> dict[str, float]:
        from cvtrain.metrics.generative.frechet import frechet_distance, statistics
        from cvtrain.metrics.generative.kid import kernel_inception_distance

        real, fake = gathered_features(self._real), gathered_features(self._fake)
        fid = frechet_distance(*statistics(real), *statistics(fake))
        kid_mean, kid_std = kernel_inception_distance(real, fake)
        results = {"fid": float(fid), "kid": float(kid_mean), "kid_std": float(kid_std)}
        if self._below_full_size():  # the same on every rank: gathered_features is a collective
            # fid is always samples at dataset.image_size against real images at that size,
            # so the FIDs of all phases compare and best.pt is kept by the images users get;
            # fid_phase (against real images at this phase's size) follows progress within a phase.
            real_phase = gathered_features(self._real_phase)
            results["fid_phase"] = float(frechet_distance(*statistics(real_phase), *statistics(fake)))
        if self._indices is not None:  # conditional: the share of samples classified as the class asked for
            results["class_acc"] = float(gathered_features(self._hits).mean())
        return results

    @torch.inference_mode()
    def fixed_samples(self) -> tuple[torch.Tensor, list[str]]:
        """The same noise at every evaluation (seeded by the run's seed): grid_size² images,
        and for a conditional model one row per class."""
        n = self.cfg.task.grid_size
        self._set_alpha()
        seed = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        z = self._noise(n * n, seed)
        labels, titles = None, []
        if self.num_classes:
            rows = torch.arange(n * n, device=self.device) // n
            labels = rows % self.num_classes
            titles = [self.class_names[int(c)] for c in labels[::n]]
        return to_uint8(self.active["generator"](z, labels)).cpu(), titles

    @torch.inference_mode()
    def interpolations(self, steps: int = 8) -> torch.Tensor:
        """grid_size rows, each a straight line in latent space between two fixed noise
        vectors (same class along a row for a conditional model): a smooth row says the
        generator learned a continuous map rather than memorised images."""
        rows = self.cfg.task.grid_size
        seed = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 1)
        ends = self._noise(2 * rows, seed).view(rows, 2, -1)
        weights = torch.linspace(0, 1, steps, device=self.device).view(1, steps, 1)
        z = (ends[:, :1] * (1 - weights) + ends[:, 1:] * weights).reshape(rows * steps, -1)
        labels = None
        if self.num_classes:
            labels = (torch.arange(rows * steps, device=self.device) // steps) % self.num_classes
        self._set_alpha()
        return to_uint8(self.active["generator"](z, labels)).cpu()

    def save_outputs(self, out_dir: Path, tag: str) -> list[Path]:
        images, _ = self.fixed_samples()
        grid = save_grid(images, out_dir / "samples.png", cols=self.cfg.task.grid_size)
        save_grid(images, out_dir / f"samples_{tag}.png", cols=self.cfg.task.grid_size)
        gif = append_gif_frame(grid, out_dir / "samples.gif")
        lines = save_grid(self.interpolations(), out_dir / "interpolation.png", cols=8)
        return [grid, gif, lines]

    # --- prediction -----------------------------------------------------------
    @torch.inference_mode()
    def predict(self, out_dir: Path) -> list[dict[str, Any]]:
        """`num_samples=N` PNGs (of `class=NAME` for a conditional model) and a grid."""
        n, wanted = self.cfg.num_samples, self.cfg["class"]
        labels = None
        if wanted is not None:
            if wanted not in self.class_names:
                from cvtrain.errors import unknown_choice

                raise unknown_choice("class", wanted, self.class_names)
            labels = torch.full((n,), self.class_names.index(wanted), device=self.device)
        self._set_alpha()
        seed = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        images = to_uint8(self.active["generator"](self._noise(n, seed), labels)).cpu()
        records = []
        for i, image in enumerate(images):
            path = save_grid(image[None], out_dir / f"sample_{i:04d}.png", cols=1)
            records.append({"input": f"z{i}", "prediction": str(path)})
        save_grid(images, out_dir / "samples.png", cols=self.cfg.task.grid_size)
        return records

    # --- checkpoint state -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Class names and channels (predict needs no data set), and the global step, from
        which a growing model's fade-in alpha follows in mode=eval and predict."""
        return {**self.meta_state(), "global_step": self.global_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.load_meta(state)
            self.global_step = int(state.get("global_step", 0))
