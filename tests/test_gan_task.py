"""The gan task: every model with every loss takes a step; the discriminator steps
task.d_steps times per generator step; samples, the GIF and predictions are written;
DDP with two gloo ranks trains dcgan and WGAN-GP; progan grows and resumes."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_cfg, read_jsonl, run_cli

from cvtrain.engine.trainer import Trainer
from cvtrain.registry import TASKS

TINY = ["task=gan", "dataset.num_train=64", "dataset.num_val=32", "dataset.batch_size=16", "dataset.eval_batch_size=32",
        "trainer.progress=none", "trainer.num_threads=1", "trainer.device=cpu", "task.grid_size=2"]
MODELS = ["mlp_gan", "dcgan"]
LOSSES = ["non_saturating", "hinge", "lsgan", "wgan_gp"]


def _trainer(tmp_path, *overrides):
    cfg = compose_cfg([*TINY, *overrides])
    return Trainer(cfg, TASKS.get("gan")(cfg), tmp_path)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_takes_a_step_with_every_loss(tmp_path, model, loss):
    trainer = _trainer(tmp_path, f"model={model}", f"loss={loss}", "trainer.max_steps=1", "logger.images=false",
                       "task.d_steps=2")
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in trainer.task.models.items()}
    results = trainer.fit()
    assert trainer.optimizer_steps == {"discriminator": 2, "generator": 1}
    for name, module in trainer.task.models.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], module.parameters())), f"{name} did not train"
    assert results["fid"] >= 0 and "kid" in results
    record = read_jsonl(tmp_path / "metrics.jsonl")[-1]
    assert {"train_loss_d", "train_loss_g", "train_d_real", "train_d_fake"} <= set(record)
    if loss == "wgan_gp":
        assert "train_gp" in record



def test_both_optimizers_are_the_dcgan_papers_adam_without_weight_decay(tmp_path):
    """The default optimizer (adamw) decays weights; the task must not inherit that: L2 on
    the batch-norm scales and the small GAN gradients held both networks back."""
    trainer = _trainer(tmp_path, "model=dcgan", "trainer.max_steps=1", "logger.images=false")
    trainer.fit()
    for name in ("generator", "discriminator"):
        optimizer = trainer.optimizers[name]
        assert type(optimizer) is torch.optim.Adam
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(2e-4) and tuple(group["betas"]) == (0.5, 0.999)
            assert group["weight_decay"] == 0

def test_an_ac_gan_step_adds_the_class_losses_to_both_networks(tmp_path):
    """model.d_classifier: D learns the classes of real images and G is pushed to draw images
    D classifies as the class asked for (Odena et al. 2017); both terms are logged."""
    trainer = _trainer(tmp_path, "model=dcgan", "model.num_classes=1", "model.d_classifier=true",
                       "loss.class_weight=0.5", "trainer.max_steps=1", "logger.images=false")
    assert trainer.task.loss.class_weight == 0.5
    head = trainer.task.models["discriminator"].classifier.weight.detach().clone()
    trainer.fit()
    record = read_jsonl(tmp_path / "metrics.jsonl")[-1]
    assert 1.0 < record["train_d_class"] < 3.0 and 1.0 < record["train_g_class"] < 3.0, "about log(6) at the start"
    assert record["train_loss_g"] > record["train_g_class"] * 0.5, "g_loss includes the weighted class term"
    assert not torch.equal(head, trainer.task.models["discriminator"].classifier.weight), "the class head trained"


def test_loss_g_class_weight_weighs_the_generators_class_term_alone(tmp_path):
    """loss.g_class_weight sets G's class term apart from D's (loss.class_weight). Two
    seeded one-step runs that differ only in it take the same D step and draw the same
    noise, so their G losses differ by exactly the weight difference times G's class term."""
    records = {}
    for weight in (0.0, 2.0):
        run = tmp_path / f"g{weight}"
        run.mkdir()
        trainer = _trainer(run, "model=dcgan", "model.num_classes=1", "model.d_classifier=true",
                           "loss.class_weight=1.5", f"loss.g_class_weight={weight}", "trainer.max_steps=1",
                           "logger.images=false")
        assert (trainer.task.loss.class_weight, trainer.task.loss.g_class_weight) == (1.5, weight)
        trainer.fit()
        records[weight] = read_jsonl(run / "metrics.jsonl")[-1]
    zero, two = records[0.0], records[2.0]
    assert zero["train_loss_d"] == pytest.approx(two["train_loss_d"], rel=1e-6), "D's step does not depend on it"
    assert zero["train_g_class"] == pytest.approx(two["train_g_class"], rel=1e-5)
    assert two["train_loss_g"] - zero["train_loss_g"] == pytest.approx(2.0 * two["train_g_class"], rel=1e-4)


def test_the_ema_is_kept_for_the_generator_only_and_samples_are_saved_as_grid_and_gif(tmp_path):
    trainer = _trainer(tmp_path, "model=dcgan", "trainer.epochs=2", "trainer.ema_decay=0.9")
    trainer.fit()
    assert set(trainer.ema) == {"generator"}
    images = tmp_path / "images"
    assert (images / "samples.png").is_file() and (images / "samples.gif").is_file()
    assert (images / "interpolation.png").is_file() and (tmp_path / "curves.png").is_file()
    rows = trainer.task.interpolations(steps=8)
    assert rows.shape[0] == 2 * 8, "grid_size rows of 8 steps"
    assert torch.equal(rows, trainer.task.interpolations(steps=8)), "the same latent lines every time"
    from PIL import Image

    with Image.open(images / "samples.gif") as gif:
        assert gif.n_frames == 2, "one frame per evaluation"


def test_a_conditional_generator_draws_the_class_asked_for_in_predict(tmp_path):
    run = tmp_path / "run"
    done = run_cli([*TINY, "model=dcgan", "model.num_classes=1", "trainer.max_steps=1", f"hydra.run.dir={run}"],
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "predict"
    done = run_cli(["mode=predict", f"ckpt={run / 'checkpoints' / 'last.pt'}", "num_samples=5", "class=circle",
                    f"hydra.run.dir={out}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list(out.rglob("sample_*.png"))) == 5 and list(out.rglob("samples.png"))
    bad = run_cli(["mode=predict", f"ckpt={run / 'checkpoints' / 'last.pt'}", "class=cirlce",
                   f"hydra.run.dir={tmp_path / 'bad'}"], cwd=tmp_path)
    assert bad.returncode == 2 and "Did you mean 'circle'" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["non_saturating", "wgan_gp"])
def test_dcgan_trains_under_ddp_with_two_gloo_ranks(tmp_path, loss):
    run = tmp_path / "run"
    done = run_cli([*TINY, "model=dcgan", f"loss={loss}", "trainer.devices=2", "trainer.max_steps=2",
                    f"hydra.run.dir={run}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["trainer"]["step"] == 2 and len(state["rng"]) == 2, "two ranks, two steps"
    record = read_jsonl(run / "metrics.jsonl")[-1]
    assert record["fid"] > 0 and (loss != "wgan_gp" or record["train_gp"] >= 0)


def test_progan_grows_phase_by_phase_to_the_image_size_and_fades_each_stage_in(tmp_path):
    trainer = _trainer(tmp_path, "model=progan", "model.width=16", "loss=wgan_gp", "trainer.epochs=4",
                       "task.epochs_per_phase=1", "logger.images=false")
    trainer.fit()
    generator = trainer.task.models["generator"]
    assert trainer.phase == 3 and generator.resolution == 32, "4x4 -> 8 -> 16 -> 32, one phase an epoch"
    assert trainer.ema["generator"].module.resolution == 32, "the EMA generator grew with it"
    assert generator.alpha == 1.0, "the last stage has faded in by the end of its phase"
    state = torch.load(tmp_path / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["trainer"]["phase"] == 3
    images, _ = trainer.task.fixed_samples()
    assert images.shape[-1] == 32
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [("fid_phase" in r) for r in records] == [True, True, True, False], "fid_phase only below 32 px"
    assert all(r["fid"] >= 0 and r.get("fid_phase", 0) >= 0 for r in records)


@pytest.mark.slow
def test_progan_killed_mid_phase_resumes_in_that_phase_to_the_uninterrupted_weights(tmp_path):
    import os
    import signal

    from conftest import flat_state
    from test_signals import assert_no_process_left, start_cli, wait_for_line

    args = ["task=gan", "model=progan", "model.width=16", "loss=wgan_gp", "dataset.num_train=256", "dataset.num_val=32",
            "dataset.batch_size=16", "dataset.eval_batch_size=32", "trainer.epochs=4", "task.epochs_per_phase=1",
            "trainer.progress=plain", "trainer.log_every=1", "trainer.deterministic=true", "trainer.num_threads=1",
            "logger.images=false", "task.grid_size=2"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = run_cli([*args, f"hydra.run.dir={whole}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    proc = start_cli([*args, f"hydra.run.dir={killed}"], tmp_path, tmp_path / "killed.log")
    try:
        wait_for_line(proc, tmp_path / "killed.log", "epoch 3 2/16")  # phase 2, its stage fading in
        os.kill(proc.pid, signal.SIGKILL)  # only the process this test started
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_no_process_left(str(killed))
    saved = torch.load(killed / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert saved["trainer"]["epoch"] == 2 and saved["trainer"]["phase"] == 1, saved["trainer"]
    resumed = run_cli([*args, f"hydra.run.dir={killed}", f"resume={killed}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True) for run in (whole, killed))
    assert a["trainer"]["phase"] == b["trainer"]["phase"] == 3
    fa, fb = (flat_state({k: s[k] for k in ("models", "ema", "optimizers")}) for s in (a, b))
    assert fa.keys() == fb.keys()
    assert not [k for k in fa if not torch.equal(fa[k], fb[k])], "the resumed run ends where the whole one does"


class _Oracle(torch.nn.Module):
    """A 'generator' that returns a real val image of the class asked for (shifted by
    `shift` classes): class_acc must then be the classifier's accuracy (or near 0)."""

    latent_dim = 4

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, shift: int, classes: int):
        super().__init__()
        self.by_class = [images[labels == c] for c in range(classes)]
        self.shift, self.classes = shift, classes

    def forward(self, z, labels):
        picks = [self.by_class[(int(c) + self.shift) % self.classes][i % 8] for i, c in enumerate(labels)]
        return torch.stack(picks).float() / 127.5 - 1


@pytest.mark.parametrize("shift, low, high", [(0, 0.9, 1.0), (1, 0.0, 0.2)])
def test_class_acc_is_the_share_of_samples_classified_as_the_class_asked_for(tmp_path, shift, low, high):
    trainer = _trainer(tmp_path, "model=dcgan", "model.num_classes=1", "trainer.ema_decay=0", "dataset.num_val=96",
                       "logger.images=false")
    val = trainer.task.build_dataset("val")
    images, labels = val.fields["image"], torch.as_tensor(val.fields["label"])
    trainer.task.models["generator"] = _Oracle(images, labels, shift, len(trainer.task.class_names))
    results = trainer.evaluate(trainer.eval_batches("val"))
    assert low <= results["class_acc"] <= high, results
