"""Config composition, command-line overrides and registry errors (no training)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cvtrain.app import check_compatible
from cvtrain.config.groups import CONF_DIR, GROUPS, model_family, options
from cvtrain.config.help import render_help
from cvtrain.config.overrides import check_overrides
from cvtrain.config.rundir import register_resolvers
from cvtrain.config.schema import Mode, register
from cvtrain.errors import UserError
from cvtrain.registry import DATASETS, MODELS, TASKS, Registry


def _compose(overrides: list[str]):
    register()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize("task", options("task"))
def test_every_task_config_composes_with_its_defaults(task):
    cfg = _compose([f"task={task}"])
    assert cfg.task.name == task
    assert cfg.model.family in cfg.task.families, "the task's default model must be one it accepts"
    assert cfg.task.monitor and cfg.task.monitor_mode in ("max", "min")
    assert cfg.mode == Mode.train
    check_compatible(cfg)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


@pytest.mark.parametrize("model", options("model"))
def test_every_model_config_composes_and_is_registered(model):
    cfg = _compose([f"model={model}"])
    assert cfg.model.name == model
    assert cfg.model.family == model_family(model)
    assert MODELS.entry(model, (cfg.model.family,)).name == model


@pytest.mark.parametrize("group", [g for g in GROUPS if g not in ("task", "model")])
def test_every_option_of_every_group_composes(group):
    for option in options(group):
        cfg = _compose([f"{group}={option}"])
        assert cfg[group] is not None


def test_every_dataset_config_is_registered_for_some_task():
    for option in options("dataset"):
        cfg = _compose([f"dataset={option}"])
        assert DATASETS.entry(cfg.dataset.name).name == option


@pytest.mark.parametrize("task", options("task"))
def test_every_task_default_dataset_is_registered_for_the_task(task):
    cfg = _compose([f"task={task}"])
    assert DATASETS.entry(cfg.dataset.name, (task,)).name == cfg.dataset.name


def test_command_line_choices_beat_the_task_defaults():
    cfg = _compose(["task=classification", "model=resnet18", "optimizer=sgd", "optimizer.lr=0.05", "trainer.epochs=3"])
    assert cfg.model.name == "resnet18"
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.lr == 0.05
    assert cfg.trainer.epochs == 3
    default = _compose(["task=classification"])
    assert default.model.name == "cnn" and default.optimizer.lr == 3e-3  # the task's own values


def test_schema_types_values_at_composition():
    cfg = _compose(["trainer.epochs=7", "trainer.clip_grad_norm=1", "model.freeze_backbone=true"])
    assert cfg.trainer.epochs == 7 and isinstance(cfg.trainer.epochs, int)
    assert cfg.trainer.clip_grad_norm == 1.0 and isinstance(cfg.trainer.clip_grad_norm, float)
    assert cfg.model.freeze_backbone is True


@pytest.mark.parametrize(
    "override", ["trainer.epocs=3", "trainer.epochs=three", "mode=tran", "model.widht=8", "trainer.precision=fp8"]
)
def test_typos_and_wrong_types_fail_at_composition(override):
    from hydra.errors import HydraException

    with pytest.raises(HydraException):
        _compose([override])


def test_unknown_group_option_names_the_closest_valid_one():
    with pytest.raises(UserError) as error:
        check_overrides(["model=resnt18"])
    message = str(error.value)
    assert "'resnt18'" in message and "Did you mean 'resnet18'" in message and "cnn" in message
    with pytest.raises(UserError, match="Did you mean 'classification'"):
        check_overrides(["task=clasification"])
    with pytest.raises(UserError, match="unknown optimizer 'adan'"):
        check_overrides(["optimizer=adamw,adan"])  # every value of a sweep is checked
    check_overrides(["model=cnn,resnet18", "optimizer.lr=1e-3", "hydra.run.dir=x"])  # valid: no error


def test_incompatible_model_family_is_a_config_error():
    cfg = _compose(["task=classification"])
    cfg.model.family = "detector"
    with pytest.raises(UserError, match="cannot train model=cnn .*pick one of: cnn"):
        check_compatible(cfg)


def test_registry_errors_name_the_valid_choices_and_the_closest():
    registry = Registry("widget")

    @registry.register("round", family="a")
    def round_widget():
        return "round"

    @registry.register("square", family="b")
    def square_widget():
        return "square"

    assert registry.get("round")() == "round"
    with pytest.raises(UserError, match=r"unknown widget 'rund'\. Did you mean 'round'\? Valid: round, square"):
        registry.get("rund")
    with pytest.raises(UserError, match="'square' is a b widget and does not fit here; valid: round"):
        registry.get("square", families=("a",))
    with pytest.raises(ValueError):
        registry.register("round", family="a")(lambda: None)
    assert TASKS.names() == sorted(TASKS.names()) and "classification" in TASKS.names()


def test_help_lists_every_group_and_option():
    text = render_help()
    for group in GROUPS:
        assert f"  {group}:" in text
        for option in options(group):
            assert option in text


def test_two_runs_started_in_one_second_get_two_folders(tmp_path, monkeypatch):
    import time as time_module
    from pathlib import Path

    from cvtrain.config import rundir

    monkeypatch.delenv(rundir.STAMP_ENV, raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setattr(time_module, "strftime", lambda fmt: "2026-01-01_00-00-00")
    first = rundir.run_dir(str(tmp_path), "train", False)
    assert Path(first).is_dir(), "the folder is claimed (created) when it is chosen"
    assert rundir.run_dir(str(tmp_path), "train", False) == first, "one run resolves its folder once"
    monkeypatch.delenv(rundir.STAMP_ENV)  # as in a second process started the same second
    second = rundir.run_dir(str(tmp_path), "train", False)
    assert second == first + "_2"
    assert rundir.run_dir(str(tmp_path), Mode.eval, False) == str(tmp_path / "eval-2026-01-01_00-00-00_2")
