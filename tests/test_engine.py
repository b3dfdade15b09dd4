"""The training loop: several optimizers, accumulation, schedules, EMA, checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import compose_cfg
from toy_tasks import Regression
from torch import nn

from cvtrain.data.memory import InMemoryDataset
from cvtrain.engine import checkpoint
from cvtrain.engine.optim import lr_multiplier
from cvtrain.engine.task import Task
from cvtrain.engine.trainer import Trainer
from cvtrain.errors import UserError

TARGET_MEAN, TARGET_STD = 3.0, 0.5


class ToyGAN(Task):
    """A 1-D GAN: the generator must learn to produce N(3, 0.5) from N(0, 1) noise.

    Two optimizers stepped by the task, discriminator first, as the course's GANs do.
    """

    name = "toy_gan"

    def build_models(self):
        return {"generator": nn.Linear(1, 1), "discriminator": nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))}

    def build_dataset(self, split):
        g = torch.Generator().manual_seed({"train": 0, "val": 1, "test": 2}[split])
        real = TARGET_MEAN + TARGET_STD * torch.randn(2048, 1, generator=g)
        return InMemoryDataset({"x": real})

    def parameter_groups(self):
        return {"discriminator": self.models["discriminator"].parameters(), "generator": self.models["generator"].parameters()}

    def _score(self, x):
        return self.active["discriminator"](torch.cat([x, x * x / 10], dim=1))

    def train_step(self, batch, step):
        real = batch["x"]
        fake = self.active["generator"](torch.randn_like(real))
        bce = nn.functional.binary_cross_entropy_with_logits
        d_real, d_fake = self._score(real), self._score(fake.detach())
        loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
        step("discriminator", loss_d)
        g_score = self._score(fake)
        loss_g = bce(g_score, torch.ones_like(g_score))
        step("generator", loss_g)
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}

    def start_eval(self, split):
        self.samples = []

    def eval_step(self, batch):
        self.samples.append(self.active["generator"](torch.randn_like(batch["x"])))

    def finish_eval(self):
        fake = torch.cat(self.samples)
        return {"mean_error": abs(float(fake.mean()) - TARGET_MEAN)}

    def monitor(self):
        return "mean_error", "min"


def _cfg(tmp_path: Path, *overrides: str):
    return compose_cfg(
        ["optimizer=adam", "optimizer.lr=0.02", "scheduler=none", "dataset.batch_size=64",
         "trainer.epochs=12", "trainer.progress=none", "logger.images=false", *overrides]
    )


def test_two_optimizers_stepped_by_the_task_train_a_gan(tmp_path):
    task = ToyGAN(_cfg(tmp_path))
    trainer = Trainer(task.cfg, task, tmp_path)
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in task.models.items()}
    results = trainer.fit()
    assert set(trainer.optimizers) == {"discriminator", "generator"}
    for name, module in task.models.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], module.parameters())), f"{name} never stepped"
    steps = 12 * (2048 // 64)
    assert trainer.global_step == steps
    assert all(s.last_epoch == steps for s in trainer.schedulers.values())
    # From mean 0 (a fresh Linear) to the data's mean 3: the generator learned.
    assert results["mean_error"] < 0.3, results


def test_bf16_on_a_cpu_trains_under_autocast_with_fp32_weights(tmp_path, caplog):
    """trainer.precision=bf16 is honoured on a CPU (native bf16 there is ~1.3x faster for
    convolutions); fp16 there still falls back to fp32, and auto stays fp32."""
    from cvtrain.engine.precision import resolve

    cpu = torch.device("cpu")
    assert resolve("fp16", cpu).dtype is None and resolve("auto", cpu).dtype is None
    seen = []

    class Bf16GAN(ToyGAN):
        def _score(self, x):
            out = super()._score(x)
            seen.append(out.dtype)
            return out

    task = Bf16GAN(_cfg(tmp_path, "trainer.precision=bf16"))
    trainer = Trainer(task.cfg, task, tmp_path)
    assert trainer.precision.dtype is torch.bfloat16 and not trainer.precision.needs_scaler
    with caplog.at_level("INFO", logger="cvtrain"):
        results = trainer.fit()
    assert "on cpu (bf16) for" in caplog.text, "the start-up line names the precision as trainer.precision does"
    assert set(seen) == {torch.bfloat16}, "the discriminator ran under bf16 autocast"
    assert all(p.dtype is torch.float32 for m in task.models.values() for p in m.parameters()), "weights stay fp32"
    assert not any(s.is_enabled() for s in trainer.scalers.values()), "bf16 needs no loss scaling"
    assert results["mean_error"] < 0.3, results  # it learns as the fp32 run does


def test_gradient_accumulation_steps_once_per_cycle(tmp_path):
    task = ToyGAN(_cfg(tmp_path, "trainer.epochs=1", "trainer.grad_accum=4"))
    trainer = Trainer(task.cfg, task, tmp_path)
    trainer.fit()
    assert trainer.global_step == (2048 // 64) // 4
    assert trainer.optimizers["generator"].state_dict()["state"][0]["step"] == trainer.global_step


def test_accumulated_gradients_equal_one_large_batch(tmp_path):
    """Four micro-batches of 16 with grad_accum=4 give the 64-sample batch's step."""

    def weights_after(batch_size, accum, folder):
        cfg = _cfg(folder, "optimizer=sgd", "optimizer.lr=0.1", "optimizer.momentum=0", "optimizer.weight_decay=0",
                   f"dataset.batch_size={batch_size}", f"trainer.grad_accum={accum}", "trainer.max_steps=1")
        task = Regression(cfg)
        Trainer(cfg, task, folder).fit()
        return task.models["model"].weight.detach().clone()

    one = weights_after(64, 1, tmp_path / "a")
    four = weights_after(16, 4, tmp_path / "b")
    torch.testing.assert_close(one, four, rtol=1e-5, atol=1e-6)


def test_an_unknown_optimizer_name_in_step_is_a_clear_error(tmp_path):
    task = ToyGAN(_cfg(tmp_path, "trainer.epochs=1"))

    def bad_step(batch, step):
        step("critic", batch["x"].sum())
        return {}

    task.train_step = bad_step
    with pytest.raises(UserError, match="unknown optimizer name 'critic'.*Valid: discriminator, generator"):
        Trainer(task.cfg, task, tmp_path).fit()


def test_ema_weights_are_used_for_evaluation(tmp_path):
    task = ToyGAN(_cfg(tmp_path, "trainer.epochs=2", "trainer.ema_decay=0.9"))
    trainer = Trainer(task.cfg, task, tmp_path)
    trainer.fit()
    ema_generator = trainer.eval_modules()["generator"]
    assert ema_generator is not task.models["generator"]
    assert not torch.equal(ema_generator.weight, task.models["generator"].weight)
    state = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert set(state["ema"]) == {"generator", "discriminator"}


def test_warmup_then_cosine_schedule():
    cfg = compose_cfg(["scheduler=cosine", "scheduler.warmup_steps=10", "scheduler.min_lr_ratio=0.1"]).scheduler
    f = lr_multiplier(cfg, total_steps=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)
    step = lr_multiplier(compose_cfg(["scheduler=step", "scheduler.step_every=5", "scheduler.gamma=0.5"]).scheduler, 20)
    assert [step(i) for i in (0, 4, 5, 12)] == [1.0, 1.0, 0.5, 0.25]


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"format": 1, "models": {"w": torch.ones(3)}}, path)

    def crash(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_atomic({"format": 1, "models": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(checkpoint.load(path)["models"]["w"], torch.ones(3)), "the old checkpoint must survive"
    assert sorted(os.listdir(tmp_path)) == ["last.pt"], "no temporary file may be left behind"


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_weights_only_loading_refuses_a_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": 1, "models": {}, "payload": _Exploit(marker)}, evil)
    with pytest.raises(UserError, match="refused"):
        checkpoint.load(evil)
    assert not marker.exists(), "loading must never run code from the file"


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"])
def test_corrupt_checkpoints_are_refused_with_one_line(tmp_path, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    with pytest.raises(UserError) as error:
        checkpoint.load(bad)
    assert "\n" not in str(error.value) and "bad.pt" in str(error.value)


def test_a_truncated_real_checkpoint_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"format": 1, "models": {"w": torch.randn(1000)}}, path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(UserError, match="corrupt or truncated"):
        checkpoint.load(path)


def test_torch_compile_trains_and_checkpoints_plain_weights(tmp_path):
    task = ToyGAN(_cfg(tmp_path, "trainer.epochs=2", "trainer.compile=true"))
    trainer = Trainer(task.cfg, task, tmp_path)
    results = trainer.fit()
    assert all(isinstance(m, torch._dynamo.eval_frame.OptimizedModule) for m in trainer.train_modules.values())
    assert results["mean_error"] < 2.9, "the compiled generator moved towards the data"
    keys = checkpoint.load(tmp_path / "checkpoints" / "last.pt")["models"]["generator"].keys()
    assert set(keys) == {"weight", "bias"}, "checkpoints hold the plain module's names, not _orig_mod.*"


def test_channels_last_training_keeps_the_memory_format(tmp_path):
    from conftest import SMALL_DATA

    from cvtrain.tasks.classification import ClassificationTask

    cfg = compose_cfg(["task=classification", *SMALL_DATA, "dataset.num_train=256", "trainer.epochs=1",
                       "trainer.channels_last=true", "trainer.progress=none", "logger.images=false"])
    task = ClassificationTask(cfg)
    trainer = Trainer(cfg, task, tmp_path)
    results = trainer.fit()
    conv = next(m for m in task.models["model"].modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert 0 <= results["acc1"] <= 1 and (tmp_path / "checkpoints" / "best.pt").is_file()


def test_batch_size_counts_a_detection_batch_by_its_images_not_their_channels():
    import torch

    from cvtrain.data.detection import collate_detection
    from cvtrain.engine.trainer import _batch_size

    samples = [{"image": torch.zeros(3, 8, 8, dtype=torch.uint8), "boxes": torch.zeros(0, 4),
                "labels": torch.zeros(0, dtype=torch.long), "index": torch.tensor(i)} for i in range(5)]
    assert _batch_size(collate_detection(samples)) == 5
    assert _batch_size({"image": torch.zeros(7, 3, 4, 4), "label": torch.zeros(7)}) == 7
    assert _batch_size((torch.zeros(6, 2), torch.zeros(6))) == 6


def test_a_task_can_evaluate_without_a_data_set(tmp_path):
    """A generator is scored on noise it draws itself: no validation data set exists."""

    class SamplesOnly(ToyGAN):
        def build_dataset(self, split):
            if split != "train":
                raise AssertionError("evaluation must not build a data set")
            return super().build_dataset(split)

        def eval_batches(self, split, env):
            seeds = range(env.rank, 8, env.world_size)  # this rank's share of 8 seeded batches
            return [{"x": torch.randn(64, 1, generator=torch.Generator().manual_seed(s))} for s in seeds]

        def eval_step(self, batch):
            self.seen = getattr(self, "seen", 0) + 1
            super().eval_step(batch)

    task = SamplesOnly(_cfg(tmp_path, "trainer.epochs=2"))
    results = Trainer(task.cfg, task, tmp_path).fit()
    assert task.seen == 2 * 8, "each evaluation ran over the task's own 8 batches"
    assert results["mean_error"] < 1.0


class TwoModels(Task):
    """Loss "a" flows through both models, loss "b" through model b only."""

    def build_models(self):
        torch.manual_seed(0)
        return {"a": nn.Linear(3, 3), "b": nn.Linear(3, 1)}

    def build_dataset(self, split):
        return InMemoryDataset({"x": torch.randn(32, 3, generator=torch.Generator().manual_seed(1))})

    def parameter_groups(self):
        return {"a": self.models["a"].parameters(), "b": self.models["b"].parameters()}

    @staticmethod
    def losses(a, b, x):
        loss_a = (b(a(x)) ** 2).mean()  # a's loss, through b
        loss_b = ((b(x) - 1) ** 2).mean()
        return loss_a, loss_b

    def train_step(self, batch, step):
        loss_a, loss_b = self.losses(self.active["a"], self.active["b"], batch["x"])
        step("a", loss_a)
        step("b", loss_b)
        return {"loss_a": loss_a.detach(), "loss_b": loss_b.detach()}

    def eval_step(self, batch):
        self.evaluated = True

    def finish_eval(self):
        return {"done": 1.0}

    def monitor(self):
        return "done", "max"


def test_each_optimizer_steps_on_its_own_losss_gradients_only(tmp_path):
    """grad_accum=2, loss a touches model b: b's update must come from loss b alone."""
    cfg = _cfg(tmp_path, "optimizer=sgd", "optimizer.lr=0.5", "optimizer.momentum=0", "optimizer.weight_decay=0",
               "dataset.batch_size=8",
               "trainer.grad_accum=2", "trainer.max_steps=1")
    task = TwoModels(cfg)
    trainer = Trainer(cfg, task, tmp_path)
    a0 = {k: v.clone() for k, v in task.models["a"].state_dict().items()}
    b0 = {k: v.clone() for k, v in task.models["b"].state_dict().items()}
    trainer.fit()

    # By hand: the loader's first two batches of 8 (its seeded permutation), one cycle.
    order = torch.randperm(32, generator=torch.Generator().manual_seed(cfg.seed))[:16]
    x = task.build_dataset("train").fields["x"][order]
    a, b = nn.Linear(3, 3), nn.Linear(3, 1)
    a.load_state_dict(a0), b.load_state_dict(b0)
    grads_a = [torch.zeros_like(p) for p in a.parameters()]
    grads_b = [torch.zeros_like(p) for p in b.parameters()]
    for half in (x[:8], x[8:]):
        loss_a, loss_b = TwoModels.losses(a, b, half)
        for total, g in zip(grads_a, torch.autograd.grad(loss_a / 2, list(a.parameters()))):
            total += g
        for total, g in zip(grads_b, torch.autograd.grad(loss_b / 2, list(b.parameters()))):
            total += g
    for p, g, got in zip(a.parameters(), grads_a, task.models["a"].parameters()):
        torch.testing.assert_close(got.detach(), p.detach() - 0.5 * g)
    for p, g, got in zip(b.parameters(), grads_b, task.models["b"].parameters()):
        torch.testing.assert_close(got.detach(), p.detach() - 0.5 * g)


def test_three_discriminator_steps_per_generator_step_under_float16_with_a_grad_scaler(tmp_path):
    from cvtrain.engine.precision import Precision

    class Critic3(ToyGAN):
        def steps_per_training_step(self, name):
            return 3.0 if name == "discriminator" else 1.0

        def train_step(self, batch, step):
            assert self.global_step == self.batches_seen, "the task sees the global step"
            self.batches_seen += 1
            real = batch["x"]
            bce = nn.functional.binary_cross_entropy_with_logits
            for _ in range(3):
                fake = self.active["generator"](torch.randn_like(real)).detach()
                d_real, d_fake = self._score(real), self._score(fake)
                loss_d = bce(d_real.float(), torch.ones_like(d_real).float()) + bce(
                    d_fake.float(), torch.zeros_like(d_fake).float())
                step("discriminator", loss_d)
            score = self._score(self.active["generator"](torch.randn_like(real)))
            loss_g = bce(score.float(), torch.ones_like(score).float())
            step("generator", loss_g)
            return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}

    task = Critic3(_cfg(tmp_path, "trainer.epochs=2", "scheduler=linear"))
    task.batches_seen = 0
    trainer = Trainer(task.cfg, task, tmp_path)
    trainer.precision = Precision(torch.float16, "cpu")  # CPU autocast + GradScaler, as on a GPU with fp16
    trainer.fit()
    batches = 2 * 2048 // 64
    assert trainer.global_step == batches
    assert trainer.optimizer_steps == {"discriminator": 3 * batches, "generator": batches}
    assert all(s.is_enabled() for s in trainer.scalers.values()), "fp16 loss scaling was on"
    for name, scheduler in trainer.schedulers.items():
        assert scheduler.last_epoch == trainer.optimizer_steps[name], "each schedule follows its own steps"
        assert scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-9), f"{name}'s schedule ends with the run"
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["trainer"]["optimizer_steps"] == trainer.optimizer_steps
    assert set(state["scalers"]) == {"discriminator", "generator"}


def test_sampling_weights_reads_the_ema_the_trainer_saves_else_the_trained_weights():
    """The EMA is saved as AveragedModel state; sampling_weights turns it back into the
    network's own keys (strict load), and falls back to the trained weights without one."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    net = nn.Linear(3, 2)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
    ema.update_parameters(net)  # the first update copies the network
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update_parameters(net)  # ... the second averages: EMA weight = trained weight - 0.5
    state = {"models": {"net": net.state_dict()}, "ema": {"net": ema.state_dict()}}

    weights, is_ema = checkpoint.sampling_weights(state, "net")
    fresh = nn.Linear(3, 2)
    fresh.load_state_dict(weights)  # strict: exactly the network's keys, n_averaged dropped
    assert is_ema
    assert torch.equal(fresh.weight, ema.module.weight) and not torch.equal(fresh.weight, net.weight)

    weights, is_ema = checkpoint.sampling_weights({"models": state["models"], "ema": {}}, "net")
    assert not is_ema and torch.equal(weights["weight"], net.weight)
