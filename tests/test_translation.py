"""task=translation: pix2pix and CycleGAN take a step and are scored, their losses are
composed as the reference composes them, the image history behaves as CycleGAN's, the
folder layouts train and predict (or fail in one line), CycleGAN trains under DDP with
two gloo ranks and resumes to the weights of an uninterrupted run, and the FCN-score
tells real images from noise and trains its segmenter once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import compose_cfg, read_jsonl, run_cli, train_then_predict

from cvtrain.engine.trainer import Trainer
from cvtrain.registry import TASKS

TINY = ["task=translation", "dataset.num_train=32", "dataset.num_val=32", "dataset.batch_size=8",
        "dataset.eval_batch_size=32", "model.width=8", "model.d_width=8", "trainer.progress=none",
        "trainer.num_threads=1", "trainer.device=cpu", "logger.max_images=4", "task.fcn_score=false"]
CYCLE = ["model=cyclegan", "model.blocks=2", "dataset.num_train=64", "dataset.batch_size=4"]


def _trainer(tmp_path, *overrides):
    cfg = compose_cfg([*TINY, *overrides])
    return Trainer(cfg, TASKS.get("translation")(cfg), tmp_path)


def _snapshot(trainer) -> dict[str, list[torch.Tensor]]:
    return {n: [p.detach().clone() for p in m.parameters()] for n, m in trainer.task.models.items()}


def _trained(trainer, before) -> list[str]:
    return [n for n, m in trainer.task.models.items() if any(not torch.equal(a, b) for a, b in zip(before[n], m.parameters()))]


# --- pix2pix --------------------------------------------------------------------------------


def _bare_task(*overrides, lr: float = 1e-3):
    """A translation task with its models, and a `step` that backpropagates into one plain
    Adam per optimizer name (and records the names stepped): train_step without a trainer."""
    cfg = compose_cfg([*TINY, *overrides])
    task = TASKS.get("translation")(cfg)
    task.models = task.active = task.build_models()
    optimizers = {name: torch.optim.Adam(params, lr) for name, params in task.parameter_groups().items()}
    stepped = []

    def step(name, loss):
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()
        stepped.append(name)

    return task, step, stepped


@pytest.mark.parametrize("gan_loss", ["non_saturating", "lsgan", "hinge"])
@pytest.mark.parametrize("model", ["pix2pix", "cyclegan"])
def test_every_model_takes_a_step_with_every_gan_loss(model, gan_loss):
    """One train_step: every module learns, every loss is finite."""
    task, step, stepped = _bare_task(f"model={model}", f"model.gan_loss={gan_loss}",
                                     *(CYCLE[1:] if model == "cyclegan" else []))
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in task.models.items()}
    logs = task.train_step(task.build_dataset("train").batch(torch.arange(4)), step)
    assert sorted(stepped) == ["discriminator", "generator"]
    assert all(torch.isfinite(v).all() for v in logs.values()), logs
    changed = [n for n, m in task.models.items() if any(not torch.equal(a, b) for a, b in zip(before[n], m.parameters()))]
    assert sorted(changed) == sorted(task.models)


def test_a_pix2pix_generator_learns_label_to_image():
    """Fits 16 pairs: the L1 of the last steps is well under that of the first."""
    task, step, _ = _bare_task("task.augment=false", "model.dropout=0", lr=2e-3)
    batch = task.build_dataset("train").batch(torch.arange(16))
    l1 = [float(task.train_step(batch, step)["l1"]) for _ in range(40)]
    assert np.mean(l1[-5:]) < 0.6 * np.mean(l1[:5]), l1


@pytest.mark.parametrize("pairs", ["labels", "edges"])
def test_pix2pix_steps_d_then_g_and_scores_outputs_against_targets(tmp_path, pairs):
    trainer = _trainer(tmp_path, f"dataset.pairs={pairs}", "trainer.max_steps=1")
    before = _snapshot(trainer)
    results = trainer.fit()
    assert trainer.optimizer_steps == {"discriminator": 1, "generator": 1}
    assert sorted(_trained(trainer, before)) == ["discriminator", "generator"]
    for optimizer in trainer.optimizers.values():
        group = optimizer.param_groups[0]
        assert type(optimizer) is torch.optim.Adam and tuple(group["betas"]) == (0.5, 0.999)
        assert group["weight_decay"] == 0 and group["initial_lr"] == pytest.approx(2e-4)
    assert 3 < results["psnr"] < 40 and 0 < results["ssim"] <= 1 and results["fid"] > 0
    record = read_jsonl(tmp_path / "metrics.jsonl")[-1]
    assert {"train_loss_d", "train_loss_g", "train_l1", "train_g_gan", "train_d_real"} <= set(record)
    g_gan, l1 = record["train_g_gan"], record["train_l1"]
    assert record["train_loss_g"] == pytest.approx(g_gan + 100 * l1, rel=1e-5), "GAN + 100 x L1"
    assert (tmp_path / "images" / "triptychs.png").is_file()
    generator = trainer.task.models["generator"]
    assert generator.ups[1][-1].p == 0.5, "dropout 0.5 in the decoder (pix2pix's noise)"


def test_pix2pix_lr_decays_linearly_to_zero(tmp_path):
    trainer = _trainer(tmp_path, "trainer.max_steps=4", "logger.images=false")
    trainer.fit()
    for name, scheduler in trainer.schedulers.items():
        assert [scheduler.lr_lambdas[0](s) for s in range(5)] == pytest.approx([1, 0.75, 0.5, 0.25, 0]), name


def test_pix2pix_reports_the_fcn_score_beside_the_real_images(tmp_path):
    trainer = _trainer(tmp_path, "task.fcn_score=true", "task.fcn_train_images=64", "task.fcn_epochs=1",
                       "trainer.max_steps=1", "logger.images=false")
    results = trainer.fit()
    assert {"fcn_pixel_acc", "fcn_miou", "fcn_pixel_acc_real", "fcn_miou_real", "fcn_miou_ratio"} <= set(results)
    assert results["fcn_miou_ratio"] == pytest.approx(results["fcn_miou"] / results["fcn_miou_real"])
    swapped = _trainer(tmp_path / "b", "task.fcn_score=true", "dataset.direction=BtoA", "trainer.max_steps=1",
                       "logger.images=false").fit()
    assert "fcn_miou" not in swapped, "image -> labels: the outputs are no scenes to segment"


# --- the folder layouts and predict ----------------------------------------------------------


def _pix2pix_folder(root, n=4, size=16):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        (root / split).mkdir(parents=True)
        for i in range(n):
            side = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(np.concatenate([side, 255 - side], axis=1)).save(root / split / f"{i}.png")
    return root


def test_the_pix2pix_layout_trains_and_predict_writes_translated_images(tmp_path):
    from PIL import Image

    root = _pix2pix_folder(tmp_path / "facades")
    args = [*TINY, "dataset=aligned", f"dataset.root={root}", "dataset.image_size=32", "dataset.num_workers=0"]
    out = train_then_predict(args, [f"input={root / 'test'}"], tmp_path)
    written = sorted((out / "translated").glob("*.png"))
    assert [p.name for p in written] == [f"{i}.png" for i in range(4)]
    with Image.open(written[0]) as image:
        assert image.size == (32, 32) and image.mode == "RGB"
    assert (out / "images" / "translations.png").is_file()
    records = read_jsonl(out / "predictions.jsonl")
    assert [r["prediction"] for r in records] == [str(p) for p in written]


@pytest.mark.parametrize("case, message", [
    ("unaligned", "dataset=unaligned (the CycleGAN layout) has no pairs, and model=pix2pix trains on pairs"),
    ("odd_file", "odd.png' is 15x8, but in the pix2pix layout each image is A and B side by side"),
    ("no_root", "dataset.root is required but not set"),
])
def test_a_wrong_layout_stops_in_one_line_naming_it(tmp_path, case, message):
    from PIL import Image

    root = _pix2pix_folder(tmp_path / "data", n=1)
    choice = "dataset=aligned"
    if case == "unaligned":
        choice = "dataset=unaligned"
    if case == "odd_file":
        Image.fromarray(np.zeros((8, 15, 3), np.uint8)).save(root / "train" / "odd.png")
    where = [] if case == "no_root" else [f"dataset.root={root}"]
    done = run_cli([*TINY, choice, *where, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_cyclegan_trains_on_the_cyclegan_layout(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for folder, count in (("trainA", 6), ("trainB", 4), ("testA", 2), ("testB", 3)):
        (tmp_path / "h2z" / folder).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "h2z" / folder / f"{i}.jpg")
    trainer = _trainer(tmp_path / "run", *CYCLE, "dataset=unaligned", f"dataset.root={tmp_path / 'h2z'}",
                       "dataset.image_size=32", "dataset.num_workers=0", "dataset.batch_size=2", "trainer.max_steps=2",
                       "logger.images=false")
    assert len(trainer.task.build_dataset("train")) == 6 and len(trainer.task.build_dataset("val")) == 3
    results = trainer.fit()
    assert trainer.optimizer_steps == {"discriminator": 2, "generator": 2} and results["fid_ab"] >= 0


# --- CycleGAN ---------------------------------------------------------------------------------


def test_the_generators_are_the_references_resnet_6_and_9_blocks():
    from cvtrain.models.cyclegan import ResnetGenerator

    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ResnetGenerator(3, 3, 64, 9)) == 11_378_179, "the reference's resnet_9blocks"
    assert count(ResnetGenerator(3, 3, 64, 6)) == 7_837_699, "resnet_6blocks"
    assert ResnetGenerator(3, 3, 8, 2)(torch.zeros(1, 3, 24, 24)).shape == (1, 3, 24, 24)


def test_cyclegan_steps_four_models_with_two_optimizers_and_scores_both_directions(tmp_path):
    trainer = _trainer(tmp_path, *CYCLE, "trainer.max_steps=1")
    before = _snapshot(trainer)
    results = trainer.fit()
    assert trainer.optimizer_steps == {"discriminator": 1, "generator": 1}
    assert sorted(_trained(trainer, before)) == ["discriminator_a", "discriminator_b", "generator_ab", "generator_ba"]
    models = trainer.task.models
    owned = {name: {id(p) for g in opt.param_groups for p in g["params"]} for name, opt in trainer.optimizers.items()}
    assert owned["generator"] == {id(p) for n in ("generator_ab", "generator_ba") for p in models[n].parameters()}
    assert owned["discriminator"] == {id(p) for n in ("discriminator_a", "discriminator_b") for p in models[n].parameters()}
    assert {"fid_ab", "fid_ba", "fid", "cycle_a_psnr", "cycle_b_psnr", "cycle_psnr", "cycle_a_ssim"} <= set(results)
    assert results["fid"] == pytest.approx((results["fid_ab"] + results["fid_ba"]) / 2)
    assert 3 < results["cycle_psnr"] < 40
    r = read_jsonl(tmp_path / "metrics.jsonl")[-1]
    composed = (r["train_g_gan_ab"] + r["train_g_gan_ba"] + 10 * (r["train_cycle_a"] + r["train_cycle_b"])
                + 0.5 * 10 * (r["train_identity_a"] + r["train_identity_b"]))
    assert r["train_loss_g"] == pytest.approx(composed, rel=1e-5), "GAN + 10 x cycle + 0.5 x 10 x identity"
    assert r["train_loss_d"] == pytest.approx(r["train_loss_d_a"] + r["train_loss_d_b"], rel=1e-5)
    assert (tmp_path / "images" / "triptychs_ab.png").is_file() and (tmp_path / "images" / "triptychs_ba.png").is_file()


def test_the_lsgan_generator_term_is_the_reference_codes_plain_mse():
    from cvtrain.tasks.gan_losses import LeastSquaresLoss, NonSaturatingLoss

    logits = torch.tensor([0.2, -0.7, 1.5])
    lsgan = LeastSquaresLoss()
    scaled = lsgan.reference_g_scale * lsgan.g_loss(logits)
    assert scaled == pytest.approx(torch.nn.functional.mse_loss(logits, torch.ones(3)).item())
    vanilla = NonSaturatingLoss()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones(3))
    assert vanilla.reference_g_scale * vanilla.g_loss(logits) == pytest.approx(bce.item())


def test_the_image_pool_fills_then_swaps_about_half_and_round_trips():
    from cvtrain.tasks.image_pool import ImagePool

    torch.manual_seed(0)
    pool = ImagePool(4)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first), "until full: stored and used as they come"
    new = -1.0 - torch.arange(200.0).view(200, 1, 1, 1)
    out = pool.query(new)
    from_history = int((out != new).sum())
    assert set(out.flatten().tolist()) - set(new.flatten().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert 70 < from_history < 130, "each new fake swapped for a stored one with probability 1/2"
    assert len(pool.images) == 4
    copy = ImagePool(4)
    copy.load_state_dict(pool.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(copy.images, pool.images))
    assert torch.equal(ImagePool(0).query(first), first), "size 0: no history"


def test_cyclegan_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    """Two steps, then a resumed run to four, end where four steps in one go do: weights,
    optimizers and the image histories (saved with the checkpoint) alike."""
    from conftest import flat_state

    args = [*CYCLE, "logger.images=false", "model.pool_size=3", "scheduler=none", "dataset.num_train=16",
            "dataset.num_val=8", "dataset.eval_batch_size=8"]
    whole, parted = tmp_path / "whole", tmp_path / "parted"
    batches = []
    for run, steps in ((whole, 4), (parted, 2), (parted, 4)):  # the trainer resumes from the run's last.pt
        trainer = _trainer(run, *args, f"trainer.max_steps={steps}")
        step = trainer.task.train_step
        trainer.task.train_step = lambda batch, fn, step=step: batches.append(1) or step(batch, fn)
        trainer.fit()
    assert len(batches) == 4 + 2 + 2, "the last run resumed at step 2"
    a, b = (torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True) for run in (whole, parted))
    assert a["task"]["pool_a"]["images"].shape == (3, 3, 32, 32), "the history is saved"
    fa, fb = (flat_state({k: s[k] for k in ("models", "optimizers", "task")}) for s in (a, b))
    assert fa.keys() == fb.keys() and not [k for k in fa if not torch.equal(fa[k], fb[k])]


@pytest.mark.slow
def test_cyclegan_trains_under_ddp_with_two_gloo_ranks(tmp_path):
    run = tmp_path / "run"
    done = run_cli([*TINY, *CYCLE, "trainer.devices=2", "trainer.max_steps=2", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["trainer"]["step"] == 2 and len(state["rng"]) == 2, "two ranks, two steps"
    assert sorted(state["models"]) == ["discriminator_a", "discriminator_b", "generator_ab", "generator_ba"]
    assert sorted(state["optimizers"]) == ["discriminator", "generator"]
    assert state["trainer"]["optimizer_steps"] == {"discriminator": 2, "generator": 2}
    record = read_jsonl(run / "metrics.jsonl")[-1]
    assert record["fid_ab"] > 0 and record["fid_ba"] > 0 and record["cycle_psnr"] > 0


# --- the FCN-score ----------------------------------------------------------------------------


def test_the_fcn_score_tells_real_images_from_noise_and_trains_its_segmenter_once(monkeypatch):
    from omegaconf import OmegaConf

    from cvtrain.data.translation import shapes_pairs
    from cvtrain.tasks import fcn_score

    recipe = fcn_score.SegmenterRecipe(num_train=512, epochs=2)
    segmenter = fcn_score.shapesworld_segmenter(recipe, quiet=True)
    assert fcn_score.segmenter_cache_file(recipe).is_file()
    cfg = OmegaConf.create({"image_size": 32, "min_objects": 1, "max_objects": 4, "seed": 0, "cache_dir": None,
                            "num_train": 8, "num_val": 64, "num_test": 8})
    pairs = shapes_pairs(cfg, "val")
    real, masks = pairs.fields["b"], pairs.fields["mask"]
    noise = torch.randint(0, 256, real.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    score = fcn_score.FCNScore(segmenter, "cpu")
    with torch.inference_mode():
        score.update(noise, real, masks)
    results = score.compute()
    assert results["fcn_pixel_acc_real"] > 0.85 and results["fcn_pixel_acc"] < results["fcn_pixel_acc_real"] - 0.3
    assert results["fcn_miou_real"] > 3 * results["fcn_miou"], results
    same = fcn_score.FCNScore(segmenter, "cpu")
    with torch.inference_mode():
        same.update(real, real, masks)
    assert same.compute()["fcn_miou_ratio"] == pytest.approx(1.0), "real images score as the real images"

    def no_training(*args):
        raise AssertionError("the cached segmenter must be reused")

    monkeypatch.setattr(fcn_score, "_train", no_training)
    again = fcn_score.shapesworld_segmenter(recipe, quiet=True)
    weights = segmenter.models["model"].state_dict()
    assert all(torch.equal(v, again.models["model"].state_dict()[k]) for k, v in weights.items())
    with pytest.raises(AssertionError, match="must be reused"):
        fcn_score.shapesworld_segmenter(fcn_score.SegmenterRecipe(num_train=512, epochs=3), quiet=True)
