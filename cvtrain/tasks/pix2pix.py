"""pix2pix (Isola et al. 2017) for task=translation: a U-Net from A to B against a
conditional PatchGAN on (A, B), plus L1 to the target.

The objective is colorization's `cgan` (cvtrain/tasks/colorization_losses.py): the
discriminator's GAN loss (model.gan_loss, the paper's BCE by default) halved, then the
generator's GAN loss + model.l1_weight (100) x L1, in that order, as the reference
steps them. Evaluation scores the outputs against the targets: PSNR, SSIM and
colourfulness (cvtrain/metrics/image_quality.py), FID in the ShapesWorld feature
space (as the gan task) and, where the outputs are ShapesWorld scenes drawn from
their label map or edges (dataset=shapes, direction=AtoB), the FCN-score
(cvtrain/tasks/fcn_score.py). Triptychs: images/triptychs.png (input | output | target).
"""

from __future__ import annotations

import torch

from cvtrain.registry import LOSSES
from cvtrain.tasks.gan import to_signed, to_uint8
from cvtrain.tasks.translation import TranslationTask


class Pix2PixTask(TranslationTask):
    paired = True

    def __init__(self, cfg):
        super().__init__(cfg)
        from cvtrain.tasks.colorization_losses import ConditionalGAN

        gan = LOSSES.get(cfg.model.gan_loss, families=("gan",))(cfg.loss)
        self.objective = ConditionalGAN(cfg.model.l1_weight, gan)

    def train_step(self, batch, step):
        a, b = self.signed_pair(batch)
        critic = self.active["discriminator"]
        output = self.active["generator"](a)
        loss_d, logs = self.objective.discriminator_loss(output, a, b, critic)
        step("discriminator", loss_d)
        loss_g, g_logs = self.objective.generator_loss(output, a, b, critic)
        step("generator", loss_g)
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), **logs, **g_logs}

    def translate(self, images: torch.Tensor) -> torch.Tensor:
        return to_uint8(self.active["generator"](to_signed(images)))

    # --- evaluation -----------------------------------------------------------
    def _scores_scenes(self, split: str) -> bool:
        return bool(self.cfg.task.fcn_score) and bool(getattr(self.build_dataset(split), "scene_output", False))

    def start_eval(self, split: str) -> None:
        from cvtrain.metrics.image_quality import ImageQuality
        from cvtrain.tasks.generated_scores import FrechetScore, feature_extractor

        super().start_eval(split)
        self.quality = ImageQuality(self.device)
        if not hasattr(self, "_features"):
            self._features = feature_extractor(self.cfg.dataset.image_size, self.device)
        self.fid = FrechetScore(self._features)
        self.fcn = self.fcn_score() if self._scores_scenes(split) else None

    def fcn_score(self):
        """The FCN-score of this run's image size (its segmenter trained on first use, then cached)."""
        from cvtrain.tasks.fcn_score import FCNScore, SegmenterRecipe, shapesworld_segmenter

        if not hasattr(self, "_segmenter"):
            task = self.cfg.task
            recipe = SegmenterRecipe(image_size=int(self.cfg.dataset.image_size), num_train=int(task.fcn_train_images),
                                     epochs=int(task.fcn_epochs))
            self._segmenter = shapesworld_segmenter(recipe, self.device)
        return FCNScore(self._segmenter, self.device)

    def eval_step(self, batch) -> None:
        a, b = batch["a"], batch["b"]
        output = self.translate(a)
        self.quality.update(output, b)
        self.fid.update(b, output)
        if self.fcn is not None:
            self.fcn.update(output, b, batch["mask"])
        self.show("triptychs", a, output, b)

    def finish_eval(self) -> dict[str, float]:
        results = {**self.quality.compute(), "fid": self.fid.compute()}
        if self.fcn is not None:
            results.update(self.fcn.compute())
        return results
