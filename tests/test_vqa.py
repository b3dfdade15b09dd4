"""task=vqa: soft targets, the VQA v2 json layout, both models, eval and predict from a checkpoint.

The scorer itself is checked against the official definition in test_vqa_scores.py;
here the task's own numbers are checked to be that scorer's, through the results files
mode=eval writes.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import cli_in_process, compose_cfg, read_jsonl, run_score_cli, scene_photos

from cvtrain.errors import UserError
from cvtrain.registry import DATASETS, MODELS
from cvtrain.tasks.vqa_data import soft_targets

TINY = ["task=vqa", "dataset.num_train=48", "dataset.num_val=24", "dataset.num_test=24", "dataset.batch_size=8",
        "dataset.eval_batch_size=16", "trainer.progress=none", "trainer.num_threads=1", "logger.max_images=4"]


def test_soft_targets_are_min_count_over_three():
    answers = torch.tensor([[0, 0, 0, 0, 1, 1, 2, -1, -1, -1], [3] * 10])
    targets = soft_targets(answers, 4)
    assert torch.allclose(targets[0], torch.tensor([1.0, 2 / 3, 1 / 3, 0.0]))
    assert torch.allclose(targets[1], torch.tensor([0.0, 0.0, 0.0, 1.0]))


@pytest.mark.parametrize("name", ["vqa_baseline", "san"])
def test_one_step_of_each_model(name):
    cfg = compose_cfg(["task=vqa", f"model={name}"])
    model = MODELS.get(name, families=("vqa",))(cfg.model, vocab_size=30, num_answers=12)
    images, tokens = torch.randn(3, 3, 64, 64), torch.randint(1, 30, (7, 9))
    owner = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    logits = model(images, tokens, owner)
    assert logits.shape == (7, 12)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    if name == "san":
        assert model.last_weights.shape == (7, 2, 16)
        assert torch.allclose(model.last_weights.sum(-1), torch.ones(7, 2))


def test_train_eval_predict_and_the_scorer_agree(tmp_path, capsys):
    run = tmp_path / "run"
    cli_in_process([*TINY, "trainer.max_steps=3", f"hydra.run.dir={run}"])
    record = read_jsonl(run / "metrics.jsonl")[-1]
    assert {"vqa_acc", "acc_yes_no", "acc_number", "acc_other", "acc_q_color", "acc_q_count"} <= set(record)
    assert (run / "images" / "vqa.png").is_file()
    ckpt = run / "checkpoints" / "last.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert "yes" in state["task"]["answers"] and "2" in state["task"]["answers"]

    cli_in_process([*TINY, "mode=eval", "split=val", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"])
    out = tmp_path / "eval"
    scores = json.loads((out / "eval.json").read_text())
    capsys.readouterr()  # the runs' own output
    code, printed, err = run_score_cli(["vqa", "--questions", str(out / "vqa_questions_val.json"), "--annotations",
                                        str(out / "vqa_annotations_val.json"), "--results",
                                        str(out / "vqa_results_val.json"), "--json"], capsys)
    assert code == 0, err
    official = json.loads(printed)
    assert official["overall"] == round(100 * scores["vqa_acc"], 2)
    assert official["yes/no"] == round(100 * scores["acc_yes_no"], 2)

    photos = scene_photos(tmp_path / "photos", 2)
    capsys.readouterr()
    cli_in_process([*TINY, "mode=predict", f"ckpt={ckpt}", f"input={photos}", "question=how many shapes are there ?",
                    f"hydra.run.dir={tmp_path / 'predict'}"])
    records = read_jsonl(tmp_path / "predict" / "predictions.jsonl")
    assert len(records) == 2 and all(r["prediction"] in state["task"]["answers"] for r in records)
    assert records[0]["question"] == "how many shapes are there ?"
    assert "p0.png" in capsys.readouterr().out


def test_predict_needs_a_question(tmp_path):
    run = tmp_path / "run"
    cli_in_process([*TINY, "trainer.max_steps=1", f"hydra.run.dir={run}"])
    with pytest.raises(SystemExit) as exit_:
        cli_in_process([*TINY, "mode=predict", f"ckpt={run / 'checkpoints' / 'last.pt'}",
                        f"input={scene_photos(tmp_path / 'photos', 1)}", f"hydra.run.dir={tmp_path / 'p'}"])
    assert exit_.value.code == 2


# --- the VQA v2 json layout ----------------------------------------------------------------


def write_vqa(root, images: int = 3, subtype: str = "train2014"):
    """A tiny VQA v2 layout: two questions per image, ten answers each."""
    from PIL import Image

    (root / subtype).mkdir(parents=True, exist_ok=True)
    questions, annotations = [], []
    for image_id in range(1, images + 1):
        Image.new("RGB", (40, 30), (40 * image_id, 0, 0)).save(root / subtype / f"COCO_{subtype}_{image_id:012d}.jpg")
        for k, (text, answer, atype) in enumerate([("is it red ?", "yes", "yes/no"), ("how many ?", "two", "number")]):
            qid = 100 * image_id + k
            questions.append({"image_id": image_id, "question": text, "question_id": qid})
            answers = [answer] * 8 + ["no" if atype == "yes/no" else "3"] * 2
            annotations.append({"image_id": image_id, "question_id": qid, "question_type": text.split()[0],
                                "answer_type": atype, "multiple_choice_answer": answer,
                                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                                            for i, a in enumerate(answers)]})
    (root / f"v2_OpenEnded_mscoco_{subtype}_questions.json").write_text(
        json.dumps({"data_subtype": subtype, "questions": questions}))
    (root / f"v2_mscoco_{subtype}_annotations.json").write_text(json.dumps({"annotations": annotations}))
    return questions, annotations


def vqa_cfg(root):
    return compose_cfg(["task=vqa", "dataset=vqa", f"dataset.root={root}",
                        "dataset.splits={train: train2014, val: train2014, test: train2014}"]).dataset


def test_vqa_json_layout_groups_questions_by_image(tmp_path):
    write_vqa(tmp_path)
    data = DATASETS.get("vqa", families=("vqa",))(vqa_cfg(tmp_path), "train")
    assert data.image_ids == [1, 2, 3] and [len(qs) for qs in data.questions] == [2, 2, 2]
    assert data.paths[0].name == "COCO_train2014_000000000001.jpg"
    first = data.questions[0][1]
    assert first["question"] == "how many ?" and first["answer_type"] == "number" and len(first["answers"]) == 10


@pytest.mark.parametrize(("edit", "message"), [
    (lambda q, a: a.append({**a[0], "question_id": 999}), "question_id 999 (entry 6 of"),
    (lambda q, a: a[2].pop("answers"), "entry 2 of"),
    (lambda q, a: a[1]["answers"].__setitem__(0, {"answer": 7}), "entry 1 of"),
])
def test_vqa_json_errors_name_the_entry(tmp_path, edit, message):
    questions, annotations = write_vqa(tmp_path)
    edit(questions, annotations)
    (tmp_path / "v2_mscoco_train2014_annotations.json").write_text(json.dumps({"annotations": annotations}))
    with pytest.raises(UserError, match="dataset.annotations") as error:
        DATASETS.get("vqa", families=("vqa",))(vqa_cfg(tmp_path), "train")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_vqa_json_missing_image(tmp_path):
    write_vqa(tmp_path)
    (tmp_path / "train2014" / "COCO_train2014_000000000002.jpg").unlink()
    with pytest.raises(UserError, match="COCO_train2014_000000000002.jpg"):
        DATASETS.get("vqa", families=("vqa",))(vqa_cfg(tmp_path), "train")


def test_vqa_json_layout_trains_and_scores(tmp_path):
    root = tmp_path / "vqa"
    write_vqa(root, images=4)
    run = tmp_path / "run"
    cli_in_process(["task=vqa", "dataset=vqa", f"dataset.root={root}", "dataset.image_size=32",
                    "dataset.splits={train: train2014, val: train2014, test: train2014}", "dataset.num_workers=0",
                    "dataset.batch_size=2", "trainer.max_steps=2", "trainer.progress=none", "trainer.num_threads=1",
                    f"hydra.run.dir={run}"])
    record = read_jsonl(run / "metrics.jsonl")[-1]
    assert set(record) >= {"vqa_acc", "acc_yes_no", "acc_number", "acc_q_is", "acc_q_how"}
