"""CycleGAN (Zhu et al. 2017) for task=translation: unpaired A <-> B with two generators
and two discriminators, four modules and two optimizers.

One training step, in the reference's order (models/cycle_gan_model.py):

1. generators (one optimizer over G_AB and G_BA): the GAN loss of G_AB(a) under D_B and
   of G_BA(b) under D_A (model.gan_loss, LSGAN by default, scaled as the reference
   writes it: GANLoss.reference_g_scale), + model.cycle_weight (10) x the L1 of
   G_BA(G_AB(a)) to a and of G_AB(G_BA(b)) to b, + model.identity_weight (0.5) x
   cycle_weight x the L1 of G_AB(b) to b and of G_BA(a) to a (a generator handed an
   image of its output domain should leave it alone: it keeps colours);
2. discriminators (one optimizer over D_A and D_B): real images against fakes drawn
   from a 50-image history per domain (cvtrain/tasks/image_pool.py), the two losses
   summed (each already the mean of its real and fake terms).

Evaluation: FID of G_AB(a) against the real B images and of G_BA(b) against the real A
(fid_ab, fid_ba, in the ShapesWorld feature space; `fid`, their mean, keeps best.pt),
and the PSNR / SSIM of each cycle's reconstruction (cycle_a_psnr: G_BA(G_AB(a)) against
a; cycle_b_psnr; cycle_psnr their mean). Triptychs for both directions:
images/triptychs_ab.png (a | G_AB(a) | G_BA(G_AB(a))) and images/triptychs_ba.png.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cvtrain.registry import LOSSES
from cvtrain.tasks.gan import to_signed, to_uint8
from cvtrain.tasks.image_pool import ImagePool
from cvtrain.tasks.translation import TranslationTask

DIRECTIONS = {"ab": ("a", "b", "generator_ab", "generator_ba"), "ba": ("b", "a", "generator_ba", "generator_ab")}


class CycleGANTask(TranslationTask):
    paired = False

    def __init__(self, cfg):
        super().__init__(cfg)
        model = cfg.model
        self.gan = LOSSES.get(model.gan_loss, families=("gan",))(cfg.loss)
        self.cycle_weight, self.identity_weight = float(model.cycle_weight), float(model.identity_weight)
        self.pools = {"a": ImagePool(model.pool_size), "b": ImagePool(model.pool_size)}

    # --- training -------------------------------------------------------------
    def train_step(self, batch, step):
        real = dict(zip("ab", self.signed_pair(batch)))
        net = self.active
        fake = {target: net[forward](real[source]) for source, target, forward, _ in DIRECTIONS.values()}
        logs: dict[str, torch.Tensor] = {}
        loss_g = 0.0
        for key, (source, target, forward, backward) in DIRECTIONS.items():
            critic = net[f"discriminator_{target}"]
            adversarial = self.gan.reference_g_scale * self.gan.g_loss(critic(fake[target]).float())
            cycle = F.l1_loss(net[backward](fake[target]).float(), real[source])
            logs[f"g_gan_{key}"], logs[f"cycle_{source}"] = adversarial, cycle
            loss_g = loss_g + adversarial + self.cycle_weight * cycle
            if self.identity_weight > 0:  # G_AB(b) should be b
                identity = F.l1_loss(net[forward](real[target]).float(), real[target])
                logs[f"identity_{target}"] = identity
                loss_g = loss_g + self.identity_weight * self.cycle_weight * identity
        step("generator", loss_g)
        loss_d = 0.0
        for domain in "ab":
            critic, seen = net[f"discriminator_{domain}"], self.pools[domain].query(fake[domain])
            d_loss = self.gan.d_loss(critic(real[domain]).float(), critic(seen).float())
            logs[f"loss_d_{domain}"] = d_loss
            loss_d = loss_d + d_loss
        step("discriminator", loss_d)
        return {"loss_g": loss_g.detach(), "loss_d": loss_d.detach(), **{k: v.detach() for k, v in logs.items()}}

    # --- evaluation -----------------------------------------------------------
    def translate(self, images: torch.Tensor) -> torch.Tensor:
        return to_uint8(self.active["generator_ab"](to_signed(images)))

    def start_eval(self, split: str) -> None:
        from cvtrain.metrics.image_quality import ImageQuality
        from cvtrain.tasks.generated_scores import FrechetScore, feature_extractor

        super().start_eval(split)
        if not hasattr(self, "_features"):
            self._features = feature_extractor(self.cfg.dataset.image_size, self.device)
        self.fid = {key: FrechetScore(self._features) for key in DIRECTIONS}
        self.cycle = {source: ImageQuality(self.device, prefix=f"cycle_{source}_") for source in "ab"}

    def eval_step(self, batch) -> None:
        for key, (source, target, forward, backward) in DIRECTIONS.items():
            real = to_signed(batch[source])
            fake = self.active[forward](real)
            output, back = to_uint8(fake), to_uint8(self.active[backward](fake))
            self.fid[key].update(batch[target], output)
            self.cycle[source].update(back, batch[source])
            self.show(f"triptychs_{key}", batch[source], output, back)

    def triptych_titles(self, key: str) -> tuple[str, ...]:
        source, target = key[-2].upper(), key[-1].upper()
        return (source, f"{source} -> {target}", f"{source} -> {target} -> {source}")

    def finish_eval(self) -> dict[str, float]:
        results = {f"fid_{key}": score.compute() for key, score in self.fid.items()}
        results["fid"] = (results["fid_ab"] + results["fid_ba"]) / 2
        for quality in self.cycle.values():
            scores = quality.compute()
            results.update({k: v for k, v in scores.items() if k.endswith(("psnr", "ssim"))})
        results["cycle_psnr"] = (results["cycle_a_psnr"] + results["cycle_b_psnr"]) / 2
        return results

    # --- checkpoint state -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The image histories: a resumed run's discriminators see the fakes they would have."""
        return {f"pool_{domain}": pool.state_dict() for domain, pool in self.pools.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for domain, pool in self.pools.items():
            pool.load_state_dict((state or {}).get(f"pool_{domain}", {}), self.device)
