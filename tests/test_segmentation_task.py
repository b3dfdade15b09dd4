"""task=segmentation end to end on small data: train, score, eval, predict; it learns; VOC on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import cli_in_process, read_jsonl
from PIL import Image

from cvtrain.data.shapesworld import SHAPES, ShapesWorldSpec, load_split
from cvtrain.engine import checkpoint

SMALL = ["task=segmentation", "dataset.num_train=256", "dataset.num_val=64", "dataset.num_test=64", "trainer.epochs=1",
         "trainer.progress=none", "trainer.num_threads=1", "model.width=4", "model.depth=2", "dataset.batch_size=32",
         "logger.max_images=4"]
CLASSES = ["background", *SHAPES]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("seg") / "run"
    cli_in_process([*SMALL, f"hydra.run.dir={run}"])
    return run


def test_training_scores_iou_and_saves_overlays(trained):
    record = read_jsonl(trained / "metrics.jsonl")[-1]
    assert {"pixel_acc", "miou", *(f"iou_{c}" for c in CLASSES)} <= set(record)
    assert 0 <= record["miou"] <= 1 and 0 < record["pixel_acc"] <= 1
    assert (trained / "images" / "segmentation.png").is_file()
    state = checkpoint.load(trained / "checkpoints" / "best.pt")["task"]
    assert state == {"class_names": CLASSES, "ignore_index": 255, "in_channels": 3}


def test_eval_from_checkpoint_reproduces_the_validation_miou(trained, tmp_path):
    out = tmp_path / "eval"
    cli_in_process([*SMALL, "mode=eval", f"ckpt={trained / 'checkpoints' / 'best.pt'}", "split=val",
                    f"hydra.run.dir={out}"])
    result = json.loads((out / "eval.json").read_text())
    record = read_jsonl(trained / "metrics.jsonl")[-1]
    assert result["miou"] == record["miou"] and result["pixel_acc"] == record["pixel_acc"]
    assert (out / "images" / "segmentation.png").is_file()


def test_predict_writes_palette_masks_at_the_inputs_size_without_the_data_set(trained, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    scenes = load_split("test", 64, ShapesWorldSpec())
    Image.fromarray(scenes.images[0]).save(folder / "a.png")
    Image.fromarray(scenes.images[1]).resize((80, 72)).save(folder / "b.jpg")
    out = tmp_path / "predict"
    # dataset=voc with no such root: prediction must need only the checkpoint (class names, channels)
    cli_in_process([*SMALL, "mode=predict", "dataset=voc", f"dataset.root={tmp_path / 'absent'}",
                    "dataset.image_size=64", f"ckpt={trained / 'checkpoints' / 'best.pt'}", f"input={folder}",
                    f"hydra.run.dir={out}"])
    records = read_jsonl(out / "predictions.jsonl")
    assert [r["input"].rsplit("/", 1)[-1] for r in records] == ["a.png", "b.jpg"]
    for record, size in zip(records, [(64, 64), (80, 72)]):
        mask = Image.open(record["mask"])
        assert mask.mode == "P" and mask.size == size
        values = np.unique(np.asarray(mask))
        assert set(values.tolist()) <= set(range(7))
        shares = record["shares"]
        assert set(shares) <= set(SHAPES) and sum(shares.values()) <= 100.0 + 1e-6
        assert record["prediction"] == (", ".join(f"{k} {v:.1f}%" for k, v in shares.items()) or "background only")
    assert (out / "images" / "segmentation.png").is_file()
    assert "a.png\t" in capsys.readouterr().out


@pytest.mark.slow
def test_a_unet_learns_the_shapes(tmp_path):
    """384 steps on small, low-resolution scenes: far above predicting background everywhere."""
    run = tmp_path / "learn"
    cli_in_process(["task=segmentation", "dataset.image_size=32", "dataset.num_train=2048", "dataset.num_val=128",
                    "trainer.epochs=3", "trainer.val_every=3", "dataset.batch_size=16", "model.width=8",
                    "model.depth=3", "trainer.num_threads=1", "trainer.progress=none", "logger.images=false",
                    "trainer.save_last=false", f"hydra.run.dir={run}"])
    record = read_jsonl(run / "metrics.jsonl")[-1]
    background_only = 1 / 7  # the most predicting background everywhere scores: its IoU <= 1, six zeros
    assert record["miou"] > 2.5 * background_only, record
    assert sum(record[f"iou_{name}"] > 0.5 for name in SHAPES) >= 2, record


def test_trains_on_voc_files_through_a_data_loader(tmp_path):
    from dense_fixtures import write_voc_fixture

    fx = write_voc_fixture(tmp_path / "voc", n=4)
    run = tmp_path / "run"
    cli_in_process(["task=segmentation", *fx.overrides, "dataset.image_size=32", "dataset.num_workers=0",
                    "dataset.batch_size=2", "trainer.epochs=1", "trainer.progress=none", "model.width=4",
                    "model.depth=2", f"hydra.run.dir={run}"])
    record = read_jsonl(run / "metrics.jsonl")[-1]
    assert "iou_aeroplane" in record and "iou_tvmonitor" in record and 0 <= record["miou"] <= 1
