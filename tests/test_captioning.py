"""task=captioning end to end on small data: every caption score, the scores reproduced
by mode=eval, beam search in predict; the COCO captions format. That each decoder
(rnn, gru, lstm) trains, resumes, evaluates and predicts is tests/test_contract.py's."""

from __future__ import annotations

import json

import pytest
from conftest import cli_in_process, read_jsonl, scene_photos

from cvtrain.engine import checkpoint
from cvtrain.errors import UserError

SMALL = ["task=captioning", "dataset.num_train=256", "dataset.num_val=64", "dataset.num_test=64", "trainer.val_every=1",
         "trainer.epochs=1", "trainer.progress=none", "model.hidden_dim=64", "model.embed_dim=32",
         "decode.beam_size=1", "decode.max_len=12"]
SCORES = {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("cap") / "run"
    cli_in_process([*SMALL, f"hydra.run.dir={run}"])
    return run


@pytest.mark.slow
def test_training_scores_every_caption_metric(trained):
    record = read_jsonl(trained / "metrics.jsonl")[-1]
    assert SCORES <= set(record), record
    assert all(0 <= record[k] <= 1 for k in SCORES - {"cider"}) and record["cider"] >= 0
    assert (trained / "images" / "captions.png").is_file()
    assert checkpoint.load(trained / "checkpoints" / "best.pt")["task"]["vocab"]["tokens"][1] == "<bos>"


@pytest.mark.slow
def test_eval_from_checkpoint_reproduces_the_scores(trained, tmp_path):
    best = trained / "checkpoints" / "best.pt"
    out = tmp_path / "eval"
    cli_in_process([*SMALL, "mode=eval", f"ckpt={best}", "split=val", f"hydra.run.dir={out}"])
    result = json.loads((out / "eval.json").read_text())
    record = read_jsonl(trained / "metrics.jsonl")[-1]
    for key in SCORES:
        assert result[key] == pytest.approx(record[key], abs=1e-9), key


@pytest.mark.slow
def test_predict_captions_each_image_in_order_with_beam_search(trained, tmp_path):
    folder = scene_photos(tmp_path / "photos", 3)
    out = tmp_path / "predict"
    cli_in_process([*SMALL, "mode=predict", "decode.beam_size=3", f"ckpt={trained / 'checkpoints' / 'best.pt'}",
                    f"input={folder}", f"hydra.run.dir={out}"])
    records = read_jsonl(out / "predictions.jsonl")
    assert [r["input"].rsplit("/", 1)[-1] for r in records] == ["p0.png", "p1.png", "p2.png"]
    assert all(isinstance(r["prediction"], str) for r in records)
    assert (out / "images" / "captions.png").is_file()


def _coco_fixture(tmp_path, n=40):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    images, annotations = [], []
    for i in range(n):
        name = f"{i:04d}.jpg"
        Image.new("RGB", (48, 32), ((i * 37) % 255, 80, 160)).save(folder / name)
        images.append({"id": 100 + i, "file_name": name, "width": 48, "height": 32})
        for j in range(5 if i % 2 else 6):
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "caption": f"A photo number {i}, take {j}."})
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return folder, path


def test_coco_captions_format_splits_by_image(tmp_path):
    from omegaconf import OmegaConf

    from cvtrain.data.captions import coco_captions

    folder, path = _coco_fixture(tmp_path)
    cfg = OmegaConf.create({"root": str(folder), "annotations": str(path), "seed": 0})
    splits = {s: coco_captions(cfg, s) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [36, 2, 2]
    ids = [i for s in splits.values() for i in s.image_ids]
    assert sorted(ids) == list(range(100, 140)), "every image in exactly one split"
    first = splits["train"]
    assert first.references[0][0].startswith(f"A photo number {first.image_ids[0] - 100},")
    assert first.paths[0].is_file()


def test_coco_captions_errors_name_the_file(tmp_path):
    from omegaconf import OmegaConf

    from cvtrain.data.captions import coco_captions

    folder, path = _coco_fixture(tmp_path, n=4)
    with pytest.raises(UserError, match="dataset.annotations: no such file"):
        coco_captions(OmegaConf.create({"root": str(folder), "annotations": str(tmp_path / "nope.json"), "seed": 0}), "train")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    with pytest.raises(UserError, match="is not a COCO captions json"):
        coco_captions(OmegaConf.create({"root": str(folder), "annotations": str(bad), "seed": 0}), "train")
