"""task=classification end to end: it learns, mode=eval reproduces the score, predictions
match the scenes, and resume after a crash equals an uninterrupted run (augmentation too)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SMALL_DATA, cli_in_process, read_jsonl

from cvtrain.engine import checkpoint
from cvtrain.tasks.classification import ClassificationTask

QUICK = [*SMALL_DATA, "trainer.progress=plain", "trainer.epochs=3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short training run shared by the tests below."""
    run = tmp_path_factory.mktemp("cls") / "run"
    cli_in_process(["task=classification", *QUICK, "dataset.num_train=3000", f"hydra.run.dir={run}"])
    return run


@pytest.mark.slow
def test_training_learns_and_fills_the_run_folder(trained):
    for name in ("config.yaml", "metrics.jsonl", "train.log", "checkpoints/last.pt", "checkpoints/best.pt",
                 "images/confusion_matrix.png", "curves.png", ".hydra/overrides.yaml"):
        assert (trained / name).is_file(), name
    records = read_jsonl(trained / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all({"step", "acc1", "acc5", "balanced_acc"} <= set(r) for r in records)
    assert records[-1]["acc1"] > 0.6, "three epochs on 3,000 scenes should beat chance (1/6) by far"
    assert records[-1]["acc5"] >= records[-1]["acc1"]
    state = checkpoint.load(trained / "checkpoints" / "best.pt")
    assert state["trainer"]["best"] == max(r["acc1"] for r in records)
    assert state["config"]["model"]["name"] == "cnn" and state["task"]["class_names"][0] == "circle"
    assert "val epoch 3" in (trained / "train.log").read_text()


@pytest.mark.slow
def test_eval_from_a_checkpoint_reproduces_the_validation_score(trained, tmp_path):
    best = trained / "checkpoints" / "best.pt"
    out = tmp_path / "eval"
    cli_in_process(["task=classification", "mode=eval", f"ckpt={best}", "split=val", *SMALL_DATA, f"hydra.run.dir={out}"])
    result = json.loads((out / "eval.json").read_text())
    best_acc = checkpoint.load(best)["trainer"]["best"]
    assert result["acc1"] == pytest.approx(best_acc, abs=1e-9)
    assert (out / "images" / "confusion_matrix.png").is_file()


@pytest.mark.slow
def test_predict_labels_image_files(trained, tmp_path):
    from PIL import Image

    from cvtrain.data.shapes import load

    cfg = checkpoint.load(trained / "checkpoints" / "best.pt")["config"]
    data = load(_DictCfg(cfg["dataset"]), "test")
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(data.images[i]).save(folder / f"scene{i:02d}.png")
    out = tmp_path / "predict"
    cli_in_process(["task=classification", "mode=predict", f"ckpt={trained / 'checkpoints' / 'best.pt'}",
                    f"input={folder}/*.png", f"hydra.run.dir={out}"])
    records = read_jsonl(out / "predictions.jsonl")
    assert [r["input"] for r in records] == sorted(str(p) for p in folder.glob("*.png"))
    names = ClassificationTask.__module__ and ["circle", "square", "triangle", "star", "hexagon", "diamond"]
    truth = [names[int(label)] for label in data.labels[:12]]
    correct = np.mean([r["prediction"] == t for r, t in zip(records, truth)])
    assert correct >= 0.5, f"predictions should mostly match the scenes' labels ({correct:.2f})"
    assert all(0 <= r["score"] <= 1 for r in records)
    assert (out / "images" / "predictions.png").is_file()


class _DictCfg(dict):
    __getattr__ = dict.__getitem__


@pytest.mark.slow
def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path, monkeypatch):
    # Augmentation and dropout draw random numbers: resume must restore those streams too.
    args = ["task=classification", *QUICK, "dataset.num_train=512", "dataset.batch_size=128", "task.augment=true",
            "model.dropout=0.2", f"paths.output_dir={tmp_path / 'out'}"]
    cli_in_process([*args, f"hydra.run.dir={tmp_path / 'straight'}"])

    original = ClassificationTask.train_step
    calls = {"n": 0}

    def crash_in_epoch_three(self, batch, step):
        calls["n"] += 1
        if calls["n"] == 2 * (512 // 128) + 2:  # second batch of epoch 3
            raise RuntimeError("simulated crash")
        return original(self, batch, step)

    monkeypatch.setattr(ClassificationTask, "train_step", crash_in_epoch_three)
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli_in_process(args)
    monkeypatch.setattr(ClassificationTask, "train_step", original)
    runs = list((tmp_path / "out" / "classification" / "cnn").iterdir())
    assert len(runs) == 1 and read_jsonl(runs[0] / "metrics.jsonl")[-1]["epoch"] == 2
    cli_in_process([*args, "resume=true"])
    assert list((tmp_path / "out" / "classification" / "cnn").iterdir()) == runs, "resume continues the same folder"

    straight = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    resumed = read_jsonl(runs[0] / "metrics.jsonl")
    drop = lambda rs: [{k: v for k, v in r.items() if k != "eval_seconds"} for r in rs]  # noqa: E731
    assert drop(resumed) == drop(straight)
    a = checkpoint.load(tmp_path / "straight" / "checkpoints" / "last.pt")["models"]["model"]
    b = checkpoint.load(runs[0] / "checkpoints" / "last.pt")["models"]["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
