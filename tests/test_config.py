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


# --- one schema per task and per kind of data set ----------------------------------------


@pytest.mark.parametrize("override", [
    ["task=classification", "task.coco_backend=faster_coco_eval"],  # detection's
    ["task=detection", "task.topk=[1]"],  # classification's
    ["task=captioning", "task.augment=true"],  # the image tasks'
    ["dataset=digits", "dataset.seq_len=16"],  # language modeling's
    ["dataset=coco_captions", "dataset.image_dir=x"],  # COCO instances'
    ["dataset=text", "dataset.max_caption_len=8"],  # captioning's
    ["dataset=voc", "dataset.min_objects=2"],  # ShapesWorld's
])
def test_another_familys_key_is_an_unknown_key(override):
    from hydra.errors import HydraException

    with pytest.raises(HydraException):
        _compose(override)


def test_each_family_keeps_its_own_keys():
    assert _compose(["task=detection", "task.coco_backend=faster_coco_eval"]).task.coco_backend == "faster_coco_eval"
    assert _compose(["task=instance_segmentation", "task.score_threshold=0.2"]).task.score_threshold == 0.2
    assert _compose(["task=classification", "task.topk=[1,3]"]).task.topk == [1, 3]
    cfg = _compose(["task=language_modeling", "dataset=text", "dataset.seq_len=16", "dataset.level=char"])
    assert (cfg.dataset.seq_len, cfg.dataset.level) == (16, "char")
    assert _compose(["task=captioning", "dataset.max_caption_len=12"]).dataset.max_caption_len == 12  # shapes has it
    assert _compose(["task=detection", "dataset=coco"]).dataset.splits.train == "train2017"


@pytest.mark.parametrize("group", ["task", "dataset"])
def test_every_file_types_its_section_by_a_schema_it_names(group):
    from cvtrain.config.schema import SECTION_SCHEMAS

    schemas, key = SECTION_SCHEMAS[group]
    for option in options(group):
        section = _compose([f"{group}={option}"])[group]
        assert section[key] in schemas and section[key] != "base", option
        assert OmegaConf.get_type(section) is schemas[section[key]], option


def test_a_saved_config_is_typed_again_by_the_schemas_it_names(tmp_path):
    from cvtrain.app import load_config, save_config

    cfg = _compose(["task=detection", "dataset=coco", "task.coco_backend=faster_coco_eval"])
    loaded = load_config(save_config(cfg, tmp_path))
    assert OmegaConf.get_type(loaded.task).__name__ == "DetectionTaskConfig"
    assert OmegaConf.get_type(loaded.dataset).__name__ == "CocoDatasetConfig"
    assert OmegaConf.get_type(loaded.model).__name__ == "DetectorModelConfig"
    assert loaded.task.coco_backend == "faster_coco_eval" and loaded.mode == Mode.train
    assert OmegaConf.to_container(loaded, resolve=True, enum_to_str=True) == OmegaConf.to_container(
        cfg, resolve=True, enum_to_str=True), "nothing lost or changed on the way"
    with pytest.raises(Exception):
        loaded.task.topk = [1]  # still typed: a classification key is no detection key


def test_a_config_saved_with_the_old_union_schemas_still_loads(tmp_path):
    from cvtrain.app import load_config, save_config

    cfg = _compose(["task=language_modeling"])
    path = save_config(cfg, tmp_path)
    old = OmegaConf.load(path)
    for section in ("task", "dataset"):
        del old[section]["schema"]  # written before sections named their schema
    old.task.coco_backend, old.task.topk = "pycocotools", [1, 5]  # every task's keys, as then
    old.dataset.image_dir, old.dataset.splits = None, {"train": "train"}
    OmegaConf.save(old, path)
    loaded = load_config(path)
    assert loaded.task.schema == "sequence" and "coco_backend" not in loaded.task
    assert loaded.dataset.schema == "shapes" and loaded.dataset.seq_len == cfg.dataset.seq_len
    assert "image_dir" not in loaded.dataset


def test_a_checkpoints_sections_replace_the_defaults_of_another_family():
    from cvtrain.app import merge_checkpoint_config

    trained = _compose(["task=detection", "dataset=coco", "model=fcos"])
    saved = OmegaConf.to_container(trained, resolve=True, enum_to_str=True)
    merged = merge_checkpoint_config(_compose(["mode=eval"]), saved, ["mode=eval"])  # classification's defaults
    assert (merged.task.name, merged.model.name, merged.dataset.name) == ("detection", "fcos", "coco")
    assert merged.dataset.image_dir == "{root}/{split}" and merged.task.coco_backend == "pycocotools"
    kept = merge_checkpoint_config(_compose(["mode=eval", "dataset=voc"]), saved, ["mode=eval", "dataset=voc"])
    assert kept.dataset.name == "voc", "a section the command line names stays the command line's"


# --- ckpt: one checkpoint or several ------------------------------------------------------


def test_ckpt_is_a_path_a_list_or_a_mapping_primary_first():
    from cvtrain.config.ckpt import checkpoint_paths

    assert checkpoint_paths("a.pt") == {"main": "a.pt"}
    assert list(checkpoint_paths(OmegaConf.create({"base": "a.pt", "upsampler": "b.pt"})).items()) == [
        ("base", "a.pt"), ("upsampler", "b.pt")]
    assert checkpoint_paths(OmegaConf.create(["a.pt", "b.pt"])) == {"0": "a.pt", "1": "b.pt"}
    cfg = _compose(["mode=eval", "ckpt={base: a.pt, upsampler: b.pt}"])
    assert list(checkpoint_paths(cfg.ckpt)) == ["base", "upsampler"]
    assert _compose(["mode=eval", "ckpt=[a.pt,b.pt]"]).ckpt == ["a.pt", "b.pt"]
    for bad in ([], {}, {"base": None}, 3):
        with pytest.raises(UserError, match="ckpt"):
            checkpoint_paths(bad)
