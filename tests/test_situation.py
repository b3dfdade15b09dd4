"""task=situation: the imSitu json layout, the model, eval and predict from a checkpoint.

The scorer is checked against the official definition in test_situation_scores.py; here
the task's numbers are checked to be that scorer's, through the files mode=eval writes.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import cli_in_process, compose_cfg, read_jsonl, run_score_cli, scene_photos

from cvtrain.errors import UserError
from cvtrain.registry import DATASETS, MODELS

TINY = ["task=situation", "dataset.num_train=48", "dataset.num_val=24", "dataset.num_test=24",
        "dataset.batch_size=8", "dataset.eval_batch_size=16", "trainer.progress=none", "trainer.num_threads=1",
        "logger.max_images=4"]


def test_one_step_of_the_model():
    cfg = compose_cfg(["task=situation"])
    model = MODELS.get("situation_baseline", families=("situation",))(cfg.model, num_verbs=5, num_roles=4,
                                                                       num_nouns=11)
    verbs, nouns = model(torch.randn(2, 3, 64, 64), torch.tensor([[0, 3], [4, 1]]),
                         torch.tensor([[[0, 1, 2, 3], [0, 3, -1, -1]], [[0, 1, 2, 3], [2, -1, -1, -1]]]))
    assert verbs.shape == (2, 5) and nouns.shape == (2, 2, 4, 11)
    (verbs.sum() + nouns.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_train_eval_predict_and_the_scorer_agree(tmp_path, capsys):
    run = tmp_path / "run"
    cli_in_process([*TINY, "trainer.max_steps=3", f"hydra.run.dir={run}"])
    record = read_jsonl(run / "metrics.jsonl")[-1]
    assert {"top1_verb", "top1_value", "top1_value_all", "top5_verb", "gt_value", "gt_value_all", "mean"} <= set(record)
    assert (run / "images" / "situations.png").is_file()
    ckpt = run / "checkpoints" / "last.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["task"]["tables"]["verbs"] == ["hovering", "lifting", "pulling", "pushing", "resting"]
    assert "" in state["task"]["tables"]["nouns"]

    cli_in_process([*TINY, "mode=eval", "split=val", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"])
    out = tmp_path / "eval"
    scores = json.loads((out / "eval.json").read_text())
    capsys.readouterr()  # the runs' own output
    code, printed, err = run_score_cli(["situation", "--gt", str(out / "situation_gt_val.json"), "--results",
                                        str(out / "situation_results_val.json"), "--json"], capsys)
    assert code == 0 and "no frame" not in err, err
    official = json.loads(printed)
    assert official == pytest.approx({k: scores[k] for k in official}, abs=1e-12)
    results = json.loads((out / "situation_results_val.json").read_text())
    assert all(5 <= len(ranked) <= 6 for ranked in results.values())

    photos = scene_photos(tmp_path / "photos", 2)
    capsys.readouterr()
    cli_in_process([*TINY, "mode=predict", f"ckpt={ckpt}", f"input={photos}", f"hydra.run.dir={tmp_path / 'predict'}"])
    records = read_jsonl(tmp_path / "predict" / "predictions.jsonl")
    assert len(records) == 2 and len(records[0]["top"]) == 5
    best = records[0]["top"][0]
    assert records[0]["prediction"].startswith(best["verb"] + ": agent=")
    assert (tmp_path / "predict" / "images" / "situations.png").is_file()
    assert "p1.png" in capsys.readouterr().out


# --- the imSitu json layout ------------------------------------------------------------------

SPACE = {"verbs": {"jumping": {"order": ["agent", "place"], "roles": {"agent": {}, "place": {}}},
                   "cutting": {"order": ["agent", "item", "tool"], "roles": {"agent": {}, "item": {}, "tool": {}}}},
         "nouns": {"n1": {"gloss": ["man"]}, "n2": {"gloss": ["field"]}, "n3": {"gloss": ["knife"]},
                   "n4": {"gloss": ["bread"]}}}


def write_imsitu(root):
    from PIL import Image

    (root / "resized_256").mkdir(parents=True, exist_ok=True)
    jump = {"agent": "n1", "place": "n2"}
    cut = {"agent": "n1", "item": "n4", "tool": "n3"}
    data = {"jumping_1.jpg": {"verb": "jumping", "frames": [jump, jump, {"agent": "n1", "place": ""}]},
            "cutting_1.jpg": {"verb": "cutting", "frames": [cut, cut, cut]},
            "jumping_2.jpg": {"verb": "jumping", "frames": [jump] * 3}}
    for i, name in enumerate(data):
        Image.new("RGB", (50, 40), (60 * i, 100, 0)).save(root / "resized_256" / name)
    for split in ("train", "dev", "test"):
        (root / f"{split}.json").write_text(json.dumps(data))
    (root / "imsitu_space.json").write_text(json.dumps(SPACE))
    return data


def imsitu(root, split="train"):
    cfg = compose_cfg(["task=situation", "dataset=imsitu", f"dataset.root={root}"]).dataset
    return DATASETS.get("imsitu", families=("situation",))(cfg, split)


def test_imsitu_layout(tmp_path):
    write_imsitu(tmp_path)
    data = imsitu(tmp_path, "val")  # val reads dev.json
    assert data.image_ids == ["jumping_1.jpg", "cutting_1.jpg", "jumping_2.jpg"]
    assert data.verb_roles == {"jumping": ("agent", "place"), "cutting": ("agent", "item", "tool")}
    assert data.situations[0].frames[2] == {"agent": "n1", "place": ""}


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["cutting_1.jpg"]["frames"][1].__setitem__("tool", "n99"),
     "image 'cutting_1.jpg', role 'tool': unknown noun id 'n99'"),
    (lambda d: d["jumping_2.jpg"].__setitem__("verb", "flying"), "image 'jumping_2.jpg' has verb 'flying'"),
    (lambda d: d["jumping_1.jpg"].__setitem__("frames", [{"agent": "n1"}] * 3),
     "image 'jumping_1.jpg' (verb 'jumping') has roles ['agent']"),
    (lambda d: d["jumping_1.jpg"].pop("frames"), "image 'jumping_1.jpg' needs a verb and frames"),
])
def test_imsitu_errors_name_the_entry(tmp_path, edit, message):
    data = write_imsitu(tmp_path)
    edit(data)
    (tmp_path / "train.json").write_text(json.dumps(data))
    with pytest.raises(UserError) as error:
        imsitu(tmp_path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_imsitu_missing_image(tmp_path):
    write_imsitu(tmp_path)
    (tmp_path / "resized_256" / "cutting_1.jpg").unlink()
    with pytest.raises(UserError, match="image '.*cutting_1.jpg' of train.json is missing"):
        imsitu(tmp_path)


def test_imsitu_layout_trains_and_scores(tmp_path):
    write_imsitu(tmp_path / "imsitu")
    run = tmp_path / "run"
    cli_in_process(["task=situation", "dataset=imsitu", f"dataset.root={tmp_path / 'imsitu'}", "dataset.image_size=32",
                    "dataset.num_workers=0", "dataset.batch_size=2", "trainer.max_steps=2", "trainer.progress=none",
                    "trainer.num_threads=1", f"hydra.run.dir={run}"])
    record = read_jsonl(run / "metrics.jsonl")[-1]
    assert 0.0 <= record["top5_verb"] <= 1.0 and record["top5_verb"] == 1.0  # two verbs: both in the top 5
