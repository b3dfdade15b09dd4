"""Denoising diffusion: a class-conditional DDPM and a super-resolution stage, one task.

Training is one line of the process (cvtrain/models/diffusion_process.py): noise an
image to a random t and regress the network's output on ε (or v). A conditional model
sees its label replaced by "no label" with probability task.p_uncond, so the same network
is also the unconditional model that classifier-free guidance needs. model=sr_ddpm
trains on images at dataset.image_size x model.scale, conditioned on their image_size
version (downsampled, upsampled back bilinearly, noised at a random level: noise-
conditioning augmentation); so dataset.image_size is always the base resolution. With
model.residual (sr_ddpm's default) the process generates the scaled residual over the
bicubic upsample instead of the image (cvtrain/tasks/diffusion_sampling.py).

Evaluation samples with a few DDIM steps (task.eval_steps) from the EMA weights:
- a base model: FID and KID in the ShapesWorld feature space (the GAN task's) against
  the first task.eval_samples images of the split, and for a conditional model the share
  of samples the ShapesWorld classifier assigns to the class asked for, each for every
  guidance scale in task.guidance_scales (fid_w3, class_acc_w3, ...; fid, kid and
  class_acc are those at task.guidance). best.pt is kept by fid.
- sr_ddpm: PSNR and SSIM of its upsampling against the real high-resolution image, and
  the same for bicubic upsampling (psnr_bicubic, ssim_bicubic). best.pt is kept by psnr.

mode=predict writes samples (num_samples, class=NAME) of a base checkpoint, upsamples
input= images with an sr_ddpm checkpoint, or runs the cascade from two checkpoints:
ckpt=[BASE,SR] (or ckpt={base: BASE, sr: SR}) draws with the base model and upsamples
its samples with the SR model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cvtrain.engine.task import Task
from cvtrain.registry import DATASETS, MODELS, TASKS
from cvtrain.tasks.image_set_meta import ImageSetMeta
from cvtrain.tasks.diffusion_sampling import Denoiser, downsample, to_signed, to_uint8, upsample


def scale_key(w: float) -> str:
    """A guidance scale as a metric-name suffix: 3.0 -> "w3", 1.5 -> "w1.5"."""
    return f"w{w:g}"


@TASKS.register("diffusion")
class DiffusionTask(ImageSetMeta, Task):
    name = "diffusion"

    def __init__(self, cfg):
        super().__init__(cfg)
        from cvtrain.models.diffusion_process import GaussianDiffusion

        m = cfg.model
        self.process = GaussianDiffusion.from_config(m.schedule, m.timesteps, m.prediction,
                                                     m.get("loss_weighting", "simple"), m.get("snr_gamma", 5.0))
        self.scale = int(m.scale)
        self._datasets: dict[str, Any] = {}
        self._meta: dict[str, Any] = {}
        self.checkpoints: dict[str, dict] = {}  # set by the app in eval / predict: every loaded checkpoint
        self._resolve_monitor()

    # --- data and models ------------------------------------------------------
    @property
    def super_resolution(self) -> bool:
        return self.scale > 1

    @property
    def size(self) -> int:
        """The resolution the network works at: the data set's, times model.scale for sr_ddpm."""
        return int(self.cfg.dataset.image_size) * self.scale

    def build_dataset(self, split: str):
        if split not in self._datasets:
            dcfg = self.cfg.dataset
            if self.super_resolution:  # the high-resolution images; their low-res versions are made on the fly
                dcfg = dcfg.copy()
                dcfg.image_size = self.size
            builder = DATASETS.get(self.cfg.dataset.name, families=("diffusion",))
            self._datasets[split] = builder(dcfg, split)
        return self._datasets[split]

    @property
    def num_classes(self) -> int:
        """The data set's class count for a class-conditional model, else 0."""
        return len(self.class_names) if self.cfg.model.class_conditional else 0

    def build_models(self):
        builder = MODELS.get(self.cfg.model.name, families=tuple(self.cfg.task.families))
        return builder(self.cfg.model, image_size=self.size, channels=self.channels, num_classes=self.num_classes)

    def denoiser(self) -> Denoiser:
        """The active network (training: wrapped; evaluation: the EMA copy) as a sampler."""
        return Denoiser.from_model_config(self.active["model"], self.process, self.cfg.model, self.num_classes)

    def _resolve_monitor(self) -> None:
        """task.monitor=auto (or the default fid with sr_ddpm): fid (min) for a base model,
        psnr (max) for sr_ddpm. Written
        into the config itself, so the run's config.yaml and checkpoints name the metric."""
        t = self.cfg.task
        if self.super_resolution and t.monitor == "fid":  # the task's default, for a base model
            t.monitor, t.monitor_mode = "psnr", "max"
        if t.monitor == "auto":
            t.monitor = "psnr" if self.super_resolution else "fid"
        if t.monitor_mode == "auto":
            t.monitor_mode = "max" if str(t.monitor).startswith(("psnr", "ssim", "class_acc")) else "min"

    # --- training -------------------------------------------------------------
    def train_step(self, batch, step):
        x0 = to_signed(batch["image"])
        denoiser = self.denoiser()
        labels = None
        if self.num_classes:
            labels = batch["label"]
            dropped = torch.rand(len(labels), device=labels.device) < self.cfg.task.p_uncond
            labels = torch.where(dropped, torch.full_like(labels, self.num_classes), labels)
        extra: dict[str, torch.Tensor] = {}
        target = x0
        if self.super_resolution:
            low = downsample(x0, self.scale)
            extra = denoiser.condition(low, self.size, denoiser.training_level(len(x0), x0.device))
            target = denoiser.diffusion_target(x0, low)  # x0 itself, or the scaled residual over bicubic
        net = self.active["model"]
        loss = self.process.loss(lambda x, t: net(x, t, labels, **extra), target)
        step("main", loss)
        return {"loss": loss.detach()}

    # --- evaluation -----------------------------------------------------------
    def _scales(self) -> list[float]:
        """Guidance scales evaluated: task.guidance_scales and task.guidance (conditional models)."""
        scales = [float(w) for w in self.cfg.task.guidance_scales]
        return sorted(set(scales + [float(self.cfg.task.guidance)]))

    def eval_batches(self, split: str, env):
        """The first task.eval_samples images of the split, this rank's share, in batches of
        dataset.eval_batch_size; each batch carries its first index, which seeds its noise."""
        data = self.build_dataset(split)
        n = min(len(data), int(self.cfg.task.eval_samples))
        mine = list(range(env.rank, n, env.world_size))
        size = max(1, int(self.cfg.dataset.eval_batch_size))
        return [_take(data, mine[i : i + size]) for i in range(0, len(mine), size)]

    def start_eval(self, split: str) -> None:
        self._real: list = []
        self._fake: dict[float, list] = {w: [] for w in self._scales()}
        self._hits: dict[float, list] = {w: [] for w in self._scales()}
        self._sums = torch.zeros(5, dtype=torch.float64)  # psnr, ssim, psnr_bicubic, ssim_bicubic, count
        self._shown: dict[str, torch.Tensor] | None = None
        if not self.super_resolution:
            from cvtrain.tasks.generated_scores import classifier_indices, feature_extractor

            if not hasattr(self, "_features"):
                self._features = feature_extractor(self.size, self.device)
            self._indices = classifier_indices(self._features, self.class_names) if self.num_classes else None

    def _seed(self, offset: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(self.cfg.seed) * 100003 + offset)

    def eval_step(self, batch) -> None:
        if self.super_resolution:
            self._eval_sr(batch)
        else:
            self._eval_base(batch)

    def _eval_base(self, batch) -> None:
        real, first = batch["image"], int(batch["first"])
        labels = batch["label"] if self.num_classes else None
        self._real.append(self._features.extract(real.float() / 255.0))
        denoiser = self.denoiser()
        for w in self._fake:
            images, _ = denoiser.generate(len(real), self.size, self.channels, self.device, labels, w, "ddim",
                                          self.cfg.task.eval_steps, self.cfg.task.eta, self._seed(first))
            features = self._features.extract(to_uint8(images).float() / 255.0)
            self._fake[w].append(features)
            if self._indices is not None:
                drawn = torch.from_numpy(self._features.classify(features))
                self._hits[w].append((drawn == self._indices[labels.cpu()]).numpy())

    def _eval_sr(self, batch) -> None:
        from cvtrain.metrics.image_quality import psnr, ssim

        real = to_signed(batch["image"])
        low = downsample(real, self.scale)
        labels = batch["label"] if self.num_classes else None
        sr, _ = self.denoiser().generate(len(real), self.size, self.channels, self.device, labels,
                                         float(self.cfg.task.guidance), "ddim", self.cfg.task.eval_steps,
                                         self.cfg.task.eta, self._seed(int(batch["first"])), lowres=low,
                                         aug_fraction=float(self.cfg.task.sr_aug_level))
        bicubic = upsample(low, self.size, "bicubic")
        unit = [to_uint8(x).float() / 255.0 for x in (sr, bicubic, real)]
        # an exact copy has no error to measure: 100 dB, so one image cannot make the mean infinite
        sums = [psnr(unit[0], unit[2]).clamp(max=100).sum(), ssim(unit[0], unit[2]).sum(),
                psnr(unit[1], unit[2]).clamp(max=100).sum(),
                ssim(unit[1], unit[2]).sum(), torch.tensor(float(len(real)))]
        self._sums += torch.stack([s.double().cpu() for s in sums])
        if self._shown is None:  # the first batch's images, for images/sr.png
            self._shown = {"lowres": to_uint8(low).cpu(), "low": to_uint8(upsample(low, self.size, "nearest")).cpu(), "bicubic": to_uint8(bicubic).cpu(),
                           "sr": to_uint8(sr).cpu(), "real": batch["image"].cpu()}

    def finish_eval(self) -> dict[str, float]:
        if self.super_resolution:
            from cvtrain.engine.distributed import all_reduce_sum

            sums = all_reduce_sum(self._sums.to(self.device)).cpu()
            count = max(1.0, float(sums[4]))
            names = ("psnr", "ssim", "psnr_bicubic", "ssim_bicubic")
            return {name: float(sums[i] / count) for i, name in enumerate(names)}
        return self._base_scores()

    def _base_scores(self) -> dict[str, float]:
        from cvtrain.metrics.generative.frechet import frechet_distance, statistics
        from cvtrain.metrics.generative.kid import kernel_inception_distance
        from cvtrain.tasks.generated_scores import gathered_features as gathered

        real = gathered(self._real)
        real_stats = statistics(real)
        results: dict[str, float] = {}
        for w, parts in self._fake.items():
            fake = gathered(parts)
            key = f"_{scale_key(w)}" if self.num_classes else ""
            results[f"fid{key}"] = float(frechet_distance(*real_stats, *statistics(fake)))
            kid, kid_std = kernel_inception_distance(real, fake)
            results[f"kid{key}"], results[f"kid_std{key}"] = float(kid), float(kid_std)
            if self._indices is not None:
                results[f"class_acc{key}"] = float(gathered(self._hits[w]).mean())
            if not self.num_classes:
                break  # an unconditional model has no guidance scales
        if self.num_classes:  # the headline scores: at task.guidance
            key = scale_key(float(self.cfg.task.guidance))
            for name in ("fid", "kid", "class_acc"):
                if f"{name}_{key}" in results:
                    results[name] = results[f"{name}_{key}"]
        return results

    # --- images ---------------------------------------------------------------
    def save_outputs(self, out_dir: Path, tag: str) -> list[Path]:
        from cvtrain.tasks.diffusion_outputs import save_base_images, save_sr_images

        if self.super_resolution:
            return save_sr_images(self, out_dir)
        return save_base_images(self, out_dir)

    # --- prediction -----------------------------------------------------------
    def predict(self, out_dir: Path) -> list[dict[str, Any]]:
        from cvtrain.tasks.diffusion_outputs import predict

        return predict(self, out_dir)

    # --- checkpoint state -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Class names and channels: predict needs no data set, and a cascade's SR stage is
        rebuilt from its checkpoint alone."""
        return self.meta_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.load_meta(state)


def _take(data, indices: list[int]) -> dict[str, Any]:
    """Rows `indices` of a data set as a batch, with "first" (the first index: the noise seed)."""
    index = torch.tensor(indices, dtype=torch.long)
    if hasattr(data, "batch"):
        batch = dict(data.batch(index))
    else:
        from torch.utils.data import default_collate

        batch = dict(default_collate([data[i] for i in indices]))
    batch["first"] = torch.tensor(indices[0])
    return batch
