"""conf/experiment/*.yaml: each composes, its values land, the command line still wins,
--help lists them and the pre-check refuses an unknown one (no training)."""

from __future__ import annotations

import pytest
from conftest import compose_cfg
from omegaconf import OmegaConf

from cvtrain.app import check_compatible
from cvtrain.config.groups import EXPERIMENT, GROUPS, config_file, describe, experiment_choices, options
from cvtrain.config.help import render_help
from cvtrain.config.overrides import check_overrides
from cvtrain.errors import UserError


def _leaves(node, prefix: str = ""):
    """(dotted key, value) of every value an experiment file sets (its defaults list aside)."""
    for key, value in node.items():
        if key == "defaults":
            continue
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _leaves(value, f"{path}.")
        else:
            yield path, value


def test_there_are_real_experiments():
    assert {"captioning_attention", "segmentation_unet", "detection_fcos"} <= set(options(EXPERIMENT))


@pytest.mark.parametrize("experiment", options(EXPERIMENT))
def test_every_experiment_composes_and_its_values_land(experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    check_compatible(cfg)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    for group, option in experiment_choices(experiment).items():
        assert cfg[group].name == option, f"{experiment} picks {group}={option}"
    written = OmegaConf.to_container(OmegaConf.load(config_file(EXPERIMENT, experiment)))
    leaves = list(_leaves(written))
    assert leaves, "an experiment sets some values besides its choices"
    for key, value in leaves:
        assert OmegaConf.select(cfg, key) == value, f"{experiment}: {key}"
    assert describe(EXPERIMENT, experiment), "a one-line description for --help"


def test_captioning_attention_is_an_attending_lstm_captioner():
    cfg = compose_cfg(["experiment=captioning_attention"])
    assert (cfg.task.name, cfg.model.name, cfg.model.attention, cfg.decode.beam_size) == ("captioning", "lstm", True, 5)
    default = compose_cfg(["task=captioning"])
    assert default.model.name == "gru" and default.decode.beam_size == 3, "the experiment, not the task, set them"


def test_the_command_line_beats_the_experiment():
    cfg = compose_cfg(["experiment=detection_fcos", "model=retinanet", "trainer.epochs=1", "optimizer.lr=0.005"])
    assert (cfg.task.name, cfg.model.name, cfg.trainer.epochs, cfg.optimizer.lr) == ("detection", "retinanet", 1, 0.005)
    assert cfg.optimizer.name == "sgd" and cfg.scheduler.warmup_steps == 200, "the rest of the experiment stays"


def test_an_unknown_experiment_is_refused_with_the_valid_list():
    with pytest.raises(UserError) as error:
        check_overrides(["experiment=detection_fcoss"])
    message = str(error.value)
    assert "unknown experiment 'detection_fcoss'. Did you mean 'detection_fcos'?" in message
    assert all(name in message for name in options(EXPERIMENT))


def test_the_pre_check_judges_choices_against_the_experiments_task():
    check_overrides(["experiment=captioning_attention", "model=gru"])  # a recurrent model: fine for captioning
    check_overrides(["experiment=detection_fcos,segmentation_unet"])  # a sweep: each experiment on its own
    with pytest.raises(UserError, match="task=captioning cannot train model=resnet18"):
        check_overrides(["experiment=captioning_attention", "model=resnet18"])
    with pytest.raises(UserError, match=r"unknown model 'resnt18'.*Valid: faster_rcnn, fcos, retinanet, ssd\."):
        check_overrides(["experiment=detection_fcos", "model=resnt18"])


def test_help_lists_the_experiments_with_their_descriptions():
    text = render_help()
    section = text[text.index("Experiments (experiment=NAME"):]
    for experiment in options(EXPERIMENT):
        assert f"    {experiment:<22}{describe(EXPERIMENT, experiment)}".rstrip() in section.splitlines()
    assert "experiment (whole-run settings for task=detection)" in render_help("detection")
    assert "detection_fcos" in render_help("detection") and "detection_fcos" not in render_help("segmentation")
    assert EXPERIMENT not in GROUPS, "an experiment is no per-task group: the task help lists its own"
