"""task=detection and task=instance_segmentation: COCO results, a short run from the CLI,
its files re-scored, eval from the checkpoint, predict, and a class mismatch refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import cli_in_process, compose_cfg, read_jsonl, run_gloo_ranks

from cvtrain.metrics.detection import STAT_NAMES, evaluate_coco
from cvtrain.tasks.detection import _on_cpu, _random_hflip
from cvtrain.tasks.detection_results import encode_masks, to_coco_results

TINY_MODEL = ["model.width=8", "model.fpn_channels=16", "model.min_size=64", "model.max_size=64",
              "model.representation_size=64", "model.score_thresh=0.01", "model.box_batch_size_per_image=32"]
DATA = ["dataset.num_train=96", "dataset.num_val=24", "dataset.num_test=24", "dataset.batch_size=8",
        "dataset.eval_batch_size=12"]
RUN = ["trainer.epochs=1", "trainer.val_every=1", "trainer.progress=none", "trainer.num_threads=1",
       "scheduler.warmup_steps=2", "optimizer.lr=0.01", "logger.max_images=4"]
DETECTION = ["task=detection", *TINY_MODEL, *DATA, *RUN]
INSTANCES = ["task=instance_segmentation", *TINY_MODEL, "model.mask_channels=8", "model.mask_layers=1", *DATA, *RUN]


# --- COCO results ----------------------------------------------------------------------


def test_results_are_xywh_with_the_data_sets_category_ids():
    out = {"boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 5.0, 5.0]]),
           "labels": torch.tensor([2, 1]), "scores": torch.tensor([0.9, 0.4])}
    results = to_coco_results([out], [7], category_ids=[11, 42])
    assert results == [
        {"image_id": 7, "category_id": 42, "bbox": [10.0, 20.0, 20.0, 40.0], "score": pytest.approx(0.9)},
        {"image_id": 7, "category_id": 11, "bbox": [0.0, 0.0, 5.0, 5.0], "score": pytest.approx(0.4)},
    ]
    json.dumps(results)


def test_masks_become_rle_strings_that_decode_to_the_thresholded_mask():
    from pycocotools import mask as mask_utils

    soft = torch.rand(3, 1, 17, 23)
    rles = encode_masks(soft)
    assert all(isinstance(r["counts"], str) and r["size"] == [17, 23] for r in rles)
    json.dumps(rles)
    decoded = mask_utils.decode([{"size": r["size"], "counts": r["counts"].encode()} for r in rles])
    np.testing.assert_array_equal(decoded.transpose(2, 0, 1), (soft[:, 0] > 0.5).numpy())
    assert encode_masks(torch.zeros(0, 1, 8, 8)) == []


def test_background_detections_are_dropped():
    out = {"boxes": torch.ones(3, 4), "labels": torch.tensor([0, 2, 0]), "scores": torch.tensor([0.9, 0.8, 0.7])}
    kept = _on_cpu(out)
    assert kept["labels"].tolist() == [2] and kept["scores"].tolist() == pytest.approx([0.8])


def test_flips_move_boxes_with_their_masks():
    torch.manual_seed(0)
    mask = torch.zeros(1, 10, 20, dtype=torch.uint8)
    mask[0, 2:6, 3:8] = 1  # box x 3..8, y 2..6
    target = {"boxes": torch.tensor([[3.0, 2.0, 8.0, 6.0]]), "labels": torch.tensor([1]), "masks": mask}
    images = [torch.rand(3, 10, 20) for _ in range(16)]
    flipped_images, targets = _random_hflip(images, [target] * 16)
    flipped = [t for t in targets if not torch.equal(t["masks"], mask)]
    assert 0 < len(flipped) < 16
    for t in flipped:
        ys, xs = torch.nonzero(t["masks"][0], as_tuple=True)
        assert t["boxes"].tolist() == [[float(xs.min()), 2.0, float(xs.max() + 1), 6.0]]
    assert target["boxes"].tolist() == [[3.0, 2.0, 8.0, 6.0]], "the data set's own targets stay unchanged"


# --- end to end ---------------------------------------------------------------------------


def _val_ground_truth(args: list[str], family: str) -> dict:
    from cvtrain.registry import DATASETS

    cfg = compose_cfg(args)
    return DATASETS.get("shapes", families=(family,))(cfg.dataset, "val").coco_ground_truth()


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("det") / "run"
    cli_in_process([*DETECTION, f"hydra.run.dir={run}"])
    return run


def test_training_logs_coco_stats_and_writes_a_rescorable_results_file(detection_run):
    record = read_jsonl(detection_run / "metrics.jsonl")[-1]
    assert set(STAT_NAMES) <= set(record), record
    assert record["mar100"] > 0, "a few steps already find some shapes: the stats are not the empty-results zeros"
    results = json.loads((detection_run / "detections" / "val.json").read_text())
    assert results and {"image_id", "category_id", "bbox", "score"} == set(results[0])
    rescored = evaluate_coco(_val_ground_truth(DETECTION, "detection"), detection_run / "detections" / "val.json")
    for name in STAT_NAMES:
        assert rescored[name] == pytest.approx(record[name], abs=1e-12), name
    assert (detection_run / "images" / "detections.png").is_file()
    assert (detection_run / "images" / "pr_curve.png").is_file()


def test_eval_from_the_checkpoint_reproduces_the_logged_stats(detection_run, tmp_path):
    out = tmp_path / "eval"
    cli_in_process([*DETECTION, "mode=eval", f"ckpt={detection_run / 'checkpoints' / 'best.pt'}", "split=val",
                    f"hydra.run.dir={out}"])
    result = json.loads((out / "eval.json").read_text())
    record = read_jsonl(detection_run / "metrics.jsonl")[-1]
    for name in STAT_NAMES:
        assert result[name] == pytest.approx(record[name], abs=1e-9), name
    assert (out / "detections" / "val.json").is_file()
    fast = tmp_path / "eval-fast"
    cli_in_process([*DETECTION, "task.coco_backend=faster_coco_eval", "mode=eval", "split=val",
                    f"ckpt={detection_run / 'checkpoints' / 'best.pt'}", f"hydra.run.dir={fast}"])
    same = json.loads((fast / "eval.json").read_text())
    assert all(same[name] == pytest.approx(record[name], abs=1e-6) for name in STAT_NAMES)


def test_an_unknown_coco_backend_fails_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_in_process([*DETECTION, "task.coco_backend=fast_coco", f"hydra.run.dir={tmp_path / 'run'}"])
    assert "task.coco_backend" in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_predict_writes_detections_per_image(detection_run, tmp_path):
    from PIL import Image

    from cvtrain.data.shapesworld import ShapesWorldSpec, load_split

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(load_split("test", 3, ShapesWorldSpec()).images[:3]):
        Image.fromarray(image).resize((80, 64)).save(folder / f"p{i}.png")
    out = tmp_path / "predict"
    cli_in_process([*DETECTION, "mode=predict", "task.score_threshold=0.0",
                    f"ckpt={detection_run / 'checkpoints' / 'best.pt'}", f"input={folder}", f"hydra.run.dir={out}"])
    records = read_jsonl(out / "predictions.jsonl")
    assert [r["input"].rsplit("/", 1)[-1] for r in records] == ["p0.png", "p1.png", "p2.png"]
    classes = {"circle", "square", "triangle", "star", "hexagon", "diamond"}
    for record in records:
        assert record["detections"], "score_threshold=0 shows every kept box"
        for found in record["detections"]:
            assert found["label"] in classes and 0 <= found["score"] <= 1
            x1, y1, x2, y2 = found["box"]
            assert 0 <= x1 <= x2 <= 80 and 0 <= y1 <= y2 <= 64, "boxes are in the file's own pixels"
        assert record["prediction"].startswith(record["detections"][0]["label"])
    assert (out / "images" / "detections.png").is_file()


def test_a_runs_checkpoint_loads_as_model_weights(detection_run):
    from cvtrain.registry import MODELS

    best = detection_run / "checkpoints" / "best.pt"
    cfg = compose_cfg([*DETECTION, f"model.weights={best}"])
    model = MODELS.get("faster_rcnn")(cfg.model, num_classes=7)
    saved = torch.load(best, weights_only=True)["models"]["model"]
    assert saved and all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())


def test_a_checkpoint_for_other_classes_is_refused(detection_run, tmp_path, capsys):
    state = torch.load(detection_run / "checkpoints" / "best.pt", weights_only=True)
    state["task"]["class_names"] = list(reversed(state["task"]["class_names"]))
    other = tmp_path / "other.pt"
    torch.save(state, other)
    with pytest.raises(SystemExit) as exit_:
        cli_in_process([*DETECTION, "mode=eval", f"ckpt={other}", "split=val", f"hydra.run.dir={tmp_path / 'e'}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "class 0 is 'diamond' (id 1) in the model (6 classes) but 'circle' (id 1) (6) in the val data" in err
    assert "\n" not in err


def test_instance_segmentation_scores_boxes_and_masks(tmp_path):
    run = tmp_path / "run"
    cli_in_process([*INSTANCES, f"hydra.run.dir={run}"])
    record = read_jsonl(run / "metrics.jsonl")[-1]
    assert set(STAT_NAMES) | {f"segm_{n}" for n in STAT_NAMES} <= set(record), record
    gt = _val_ground_truth(INSTANCES, "instance_segmentation")
    segm = run / "detections" / "val_segm.json"
    assert "segmentation" in json.loads(segm.read_text())[0]
    rescored = evaluate_coco(gt, segm, iou_type="segm")
    for name in STAT_NAMES:
        assert rescored[name] == pytest.approx(record[f"segm_{name}"], abs=1e-12), name
    assert evaluate_coco(gt, run / "detections" / "val.json")["map"] == pytest.approx(record["map"], abs=1e-12)
    assert (run / "images" / "detections.png").is_file() and (run / "images" / "pr_curve.png").is_file()


def _perfect_half_per_rank(rank: int) -> dict:
    """One of two gloo ranks: it evaluated every other val image, and found each shape exactly."""
    import os

    from cvtrain.registry import TASKS

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")  # as the launcher sets them
    task = TASKS.get("detection")(compose_cfg(DETECTION))
    gt = task.build_dataset("val").coco_ground_truth()
    task.start_eval("val")
    mine = [image["id"] for image in gt["images"]][rank::2]
    task._image_ids = mine
    task._results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
                     for a in gt["annotations"] if a["image_id"] in mine]
    return task.finish_eval()


@pytest.mark.slow
def test_results_of_every_rank_are_scored_together(tmp_path):
    first, second = run_gloo_ranks(_perfect_half_per_rank, tmp_path)
    assert first == second, "rank 0 broadcasts its stats"
    assert first["map"] == pytest.approx(1.0) and first["mar100"] == pytest.approx(1.0), "half the images' results lost"
