"""The optimisation protocol a GAN, CLIP and word2vec train through without engine
changes: per-optimizer settings from config, parameter groups, sparse optimizers, an
after-step hook and per-module EMA / compile policy."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_cfg
from omegaconf import OmegaConf, open_dict
from test_engine import ToyGAN
from torch import nn

from cvtrain.data.memory import InMemoryDataset
from cvtrain.engine.task import ModulePolicy, Task
from cvtrain.engine.trainer import Trainer
from cvtrain.errors import UserError

QUIET = ["trainer.progress=none", "logger.images=false", "trainer.device=cpu", "scheduler=none"]


def _trainer(task_class, tmp_path, *overrides, optimizers=None):
    """A trainer for `task_class`; `optimizers` is what a task's YAML declares under
    optimizers: (its optimizer names, each with the settings it changes)."""
    cfg = compose_cfg([*QUIET, *overrides])
    if optimizers:
        with open_dict(cfg):
            cfg = OmegaConf.merge(cfg, {"optimizers": optimizers})
    return Trainer(cfg, task_class(cfg), tmp_path)


def test_a_named_optimizer_takes_its_own_settings_and_the_default_applies_to_the_rest(tmp_path):
    trainer = _trainer(ToyGAN, tmp_path, "optimizer=adam", "optimizer.lr=0.02", "trainer.max_steps=2",
                       optimizers={"discriminator": {"name": "sgd", "lr": 4e-4}, "generator": {}})
    trainer.fit()
    d, g = trainer.optimizers["discriminator"], trainer.optimizers["generator"]
    assert isinstance(d, torch.optim.SGD) and d.param_groups[0]["lr"] == pytest.approx(4e-4)
    assert isinstance(g, torch.optim.Adam) and g.param_groups[0]["lr"] == pytest.approx(0.02)
    assert d.param_groups[0]["momentum"] == 0.9, "keys it does not set come from optimizer.*"


def test_a_named_optimizer_the_task_does_not_have_is_refused_with_the_valid_names(tmp_path):
    trainer = _trainer(ToyGAN, tmp_path, "optimizer=adam", "trainer.max_steps=1", optimizers={"critic": {"lr": 1e-4}})
    with pytest.raises(UserError, match=r"critic.*discriminator, generator"):
        trainer.fit()


class NormNet(Task):
    """A regression through Linear -> LayerNorm -> Linear, with a temperature the task
    keeps out of weight decay itself and clamps after every step, as CLIP does."""

    name = "norm_net"
    max_log_scale = math.log(2.0)

    def build_models(self):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 1))
        net.log_scale = nn.Parameter(torch.zeros(()))
        return {"model": net}

    def build_dataset(self, split):
        x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
        return InMemoryDataset({"x": x, "y": x.sum(1, keepdim=True)})

    def parameter_groups(self):
        net = self.models["model"]
        rest = [p for n, p in net.named_parameters() if n != "log_scale"]
        return {"main": [{"params": [net.log_scale], "weight_decay": 0.0}, {"params": rest}]}

    def train_step(self, batch, step):
        net = self.active["model"]
        loss = nn.functional.mse_loss(net(batch["x"]), batch["y"]) - net.log_scale  # pushes the temperature up
        step("main", loss)
        return {"loss": loss.detach()}

    def after_optimizer_step(self, name):
        self.clamps = getattr(self, "clamps", 0) + 1
        self.models["model"].log_scale.clamp_(max=self.max_log_scale)

    def start_eval(self, split):
        pass

    def eval_step(self, batch):
        pass

    def finish_eval(self):
        return {"done": 1.0}

    def monitor(self):
        return "done", "max"


def test_weight_decay_spares_1d_parameters_and_the_tasks_own_groups_when_asked(tmp_path):
    trainer = _trainer(NormNet, tmp_path, "optimizer=adamw", "optimizer.weight_decay=0.1",
                       "optimizer.weight_decay_1d=false", "trainer.max_steps=1")
    trainer.fit()
    net = trainer.task.models["model"]
    decay = {id(p): g["weight_decay"] for g in trainer.optimizers["main"].param_groups for p in g["params"]}
    assert decay[id(net[0].weight)] == decay[id(net[2].weight)] == 0.1
    assert decay[id(net[0].bias)] == decay[id(net[1].weight)] == decay[id(net[1].bias)] == 0.0, "biases and norms"
    assert decay[id(net.log_scale)] == 0.0, "the task's own group keeps its setting"
    assert len(decay) == sum(1 for _ in net.parameters()), "every parameter is optimized once"


def test_the_after_step_hook_runs_once_per_optimizer_step_and_its_clamp_holds(tmp_path):
    trainer = _trainer(NormNet, tmp_path, "optimizer=sgd", "optimizer.lr=0.05", "dataset.batch_size=16",
                       "trainer.epochs=3")
    trainer.fit()
    assert trainer.task.clamps == trainer.optimizer_steps["main"] == 3 * 4
    assert float(trainer.task.models["model"].log_scale.detach()) == pytest.approx(NormNet.max_log_scale)


class SkipGram(Task):
    """word2vec's shape: sparse embeddings (their own sparse optimizer) and a dense head."""

    name = "skip_gram"

    def build_models(self):
        torch.manual_seed(0)
        return {"embeddings": nn.Embedding(50, 8, sparse=True), "head": nn.Linear(8, 50)}

    def build_dataset(self, split):
        centre = torch.arange(50).repeat(4)
        return InMemoryDataset({"centre": centre, "context": (centre + 1) % 50})  # predict the next word

    def parameter_groups(self):
        return {"embeddings": self.models["embeddings"].parameters(), "head": self.models["head"].parameters()}

    def loss(self, batch):
        logits = self.active["head"](self.active["embeddings"](batch["centre"]))
        return nn.functional.cross_entropy(logits, batch["context"])

    def train_step(self, batch, step):
        loss = self.loss(batch)
        step(("embeddings", "head"), loss)  # one loss, one backward, two optimizers
        return {"loss": loss.detach()}

    def start_eval(self, split):
        self.losses = []

    def eval_step(self, batch):
        self.losses.append(self.loss(batch))

    def finish_eval(self):
        return {"loss": float(torch.stack(self.losses).mean())}

    def monitor(self):
        return "loss", "min"


@pytest.mark.parametrize("embedding_optimizer", ["sparse_adam", "adagrad", "sgd"])
def test_sparse_embeddings_learn_with_a_sparse_optimizer(tmp_path, embedding_optimizer):
    trainer = _trainer(SkipGram, tmp_path, "optimizer=adam", "optimizer.lr=0.05", "optimizer.weight_decay=0",
                       "dataset.batch_size=20", "trainer.epochs=15", optimizers={"embeddings": {
                           "name": embedding_optimizer, "lr": 0.5 if embedding_optimizer != "sparse_adam" else 0.05}})
    before = trainer.evaluate(trainer.loader("val", train=False))["loss"]
    after = trainer.fit()["loss"]
    assert after < 0.5 * before, (before, after)
    assert trainer.optimizer_steps == {"embeddings": 150, "head": 150}
    assert trainer._parameter_names()[1] == {id(trainer.task.models["embeddings"].weight)}, "its gradients are sparse"


def test_sparse_adam_on_dense_parameters_is_refused_naming_one(tmp_path):
    trainer = _trainer(SkipGram, tmp_path, "optimizer=adam", "trainer.max_steps=1",
                       optimizers={"head": {"name": "sparse_adam"}})
    with pytest.raises(UserError, match=r"sparse_adam takes sparse gradients only, but head\.weight"):
        trainer.fit()


class GeneratorEMA(ToyGAN):
    def module_policy(self, name):
        return ModulePolicy(ema=name == "generator", compile=name == "generator")


def test_the_module_policy_keeps_an_ema_and_compiles_only_where_it_says(tmp_path):
    trainer = _trainer(GeneratorEMA, tmp_path, "optimizer=adam", "trainer.ema_decay=0.9", "trainer.compile=true",
                       "trainer.max_steps=1")
    assert set(trainer.ema) == {"generator"}
    assert trainer.eval_modules()["discriminator"] is trainer.task.models["discriminator"]
    assert trainer.eval_modules()["generator"] is trainer.ema["generator"].module
    assert trainer.train_modules["discriminator"] is trainer.task.models["discriminator"], "not compiled"
    assert trainer.train_modules["generator"] is not trainer.task.models["generator"], "compiled"


def test_a_named_optimizer_a_task_does_not_declare_is_a_one_line_config_error():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "cvtrain", "task=classification", "optimizers.critic.lr=1e-4"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("cvtrain: error: unknown config key 'optimizers.critic'. This task has one optimizer: "
                                   "set it with optimizer.* (optimizers.<name>.* is for tasks with several).")
