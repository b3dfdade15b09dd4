"""The contract every task and model keeps, checked for each (task, model) pair the
configs offer: one training step, evaluation, a checkpoint that round-trips, resume,
mode=eval and mode=predict, all through the real CLI on tiny data.

A new model or task is covered here without a line of test code; the tasks' own tests
keep what is specific to them (scores, learning, formats).
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import cli_in_process, read_jsonl

from cvtrain.config.groups import accepted, options

TINY = ["dataset.num_train=32", "dataset.num_val=16", "dataset.num_test=16", "dataset.batch_size=8",
        "dataset.eval_batch_size=16", "trainer.progress=none", "trainer.num_threads=1", "logger.max_images=2"]
# Per task, what keeps one step cheap without leaving the contract: METEOR starts a JVM
# per evaluation (its scores are checked in test_caption_scores.py); the FCN-score's
# segmenter trains once per session, on few images (it is checked in test_translation.py).
# Translation's linear decay ends the 1-step run at lr 0, where the resumed 2-step run goes
# on (the engine restores the optimizer's lr); CycleGAN's instance norm keeps no running
# statistics that would still change, so the resumed step needs a constant lr to train.
CHEAP = {"captioning": ["task.metrics=[bleu,rouge_l,cider]", "decode.beam_size=1"],
         "translation": ["task.fcn_train_images=64", "task.fcn_epochs=1", "model.width=8", "model.d_width=8",
                         "scheduler=none"]}
# What mode=predict reads besides images: a prompt to continue, words to find neighbours of.
PROMPTS = {"language_modeling": "prompt=a small", "word2vec": "prompt=circle"}
# What mode=predict reads besides its source: the question VQA answers about each image.
PREDICT_EXTRA = {"vqa": ["question=how many shapes are there ?"]}
PAIRS = [(task, model) for task in options("task") for model in accepted(task, "model")]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two image files for mode=predict."""
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(("task", "model"), PAIRS, ids=[f"{t}-{m}" for t, m in PAIRS])
def test_train_resume_eval_predict(task, model, tmp_path, photos, capsys):
    args = [f"task={task}", f"model={model}", *TINY, *CHEAP.get(task, [])]
    run = tmp_path / "run"
    cli_in_process([*args, "trainer.max_steps=1", f"hydra.run.dir={run}"])
    first = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert first["trainer"]["step"] == 1 and first["config"]["model"]["name"] == model
    assert read_jsonl(run / "metrics.jsonl")[-1]["step"] == 1, "an evaluation ends the run"
    assert (run / "checkpoints" / "best.pt").is_file()

    cli_in_process([*args, "trainer.max_steps=2", f"hydra.run.dir={run}", f"resume={run}"])
    assert "resumed from" in (run / "train.log").read_text()
    second = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert second["trainer"]["step"] == 2
    assert first["models"].keys() == second["models"].keys()
    changed = [n for n, m in first["models"].items()
               if any(not torch.equal(v, second["models"][n][k]) for k, v in m.items() if v.is_floating_point())]
    assert changed, "the resumed step trained something"

    ckpt = run / "checkpoints" / "last.pt"
    cli_in_process([*args, "mode=eval", "split=val", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"])
    scores = json.loads((tmp_path / "eval" / "eval.json").read_text())
    monitored = first["config"]["task"]["monitor"]
    assert monitored in scores

    source = PROMPTS.get(task, f"input={photos}")
    capsys.readouterr()
    cli_in_process([*args, "mode=predict", f"ckpt={ckpt}", source, *PREDICT_EXTRA.get(task, []), f"hydra.run.dir={tmp_path / 'predict'}"])
    records = read_jsonl(tmp_path / "predict" / "predictions.jsonl")
    assert records and all({"input", "prediction"} <= set(r) for r in records)
    assert records[0]["input"].split("/")[-1] in capsys.readouterr().out
