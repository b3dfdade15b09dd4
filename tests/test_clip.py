"""task=clip: the loss under DDP (two gloo ranks) equals one process's on the same global
batch, gradients included; the causal text encoder; the temperature's clamp; one step of
each image encoder with every score; zero-shot label ranking in predict; the linear probe.
That clip trains, resumes, evaluates and predicts through the CLI is tests/test_contract.py's."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import cli_in_process, read_jsonl, run_gloo_ranks, scene_photos

SMALL = ["task=clip", "dataset.num_train=64", "dataset.num_val=32", "dataset.num_test=32", "dataset.image_size=16",
         "dataset.batch_size=16", "dataset.eval_batch_size=32", "trainer.progress=none", "trainer.num_threads=1",
         "model.width=16", "model.layers=2", "model.heads=2", "model.text_width=16", "model.text_layers=1",
         "model.text_heads=2", "model.embed_dim=16", "task.probe_samples=64"]
BATCH, LENGTH, VOCAB = 8, 10, 30


def _model():
    """The same small CLIP (ViT: no BatchNorm, whose batch statistics are per rank) and the
    same global batch in every process."""
    from omegaconf import OmegaConf

    from cvtrain.models.clip import clip

    torch.manual_seed(0)
    cfg = OmegaConf.create({"image_encoder": "vit", "width": 16, "layers": 2, "heads": 2, "patch_size": 4,
                            "text_width": 16, "text_layers": 2, "text_heads": 2, "context_length": 16, "embed_dim": 8})
    model = clip(cfg, vocab_size=VOCAB, image_size=8)
    images = torch.randn(BATCH, 3, 8, 8)
    tokens = torch.randint(4, VOCAB, (BATCH, LENGTH))
    tokens[:, 0], tokens[torch.arange(BATCH), torch.randint(2, LENGTH, (BATCH,))] = 1, 2  # <bos> ... <eot>
    return model, images, tokens


def _loss_and_grads(model, images, tokens):
    from cvtrain.tasks.contrastive import clip_loss

    loss = clip_loss(*model(images, tokens))
    loss.backward()
    return loss.item(), {n: p.grad.flatten().tolist() for n, p in model.named_parameters()}


def _ddp_rank(rank: int) -> dict:
    """One rank of two: DDP over CLIP, this rank's half of the global batch; the loss is
    the mean over ranks of each rank's loss (what DDP's gradient averaging optimizes)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    model, images, tokens = _model()
    half = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
    loss, _ = _loss_and_grads(DistributedDataParallel(model), images[half], tokens[half])
    total = torch.tensor(loss)
    dist.all_reduce(total)
    return {"loss": total.item() / 2, "grads": {n: p.grad.flatten().tolist() for n, p in model.named_parameters()}}


def test_the_loss_and_gradients_under_ddp_equal_one_process_on_the_global_batch(tmp_path):
    model, images, tokens = _model()
    want_loss, want_grads = _loss_and_grads(model, images, tokens)
    ranks = run_gloo_ranks(_ddp_rank, tmp_path)
    for rank in ranks:
        assert rank["loss"] == pytest.approx(want_loss, rel=1e-5)
        assert rank["grads"].keys() == want_grads.keys()
        for name, grad in want_grads.items():
            torch.testing.assert_close(torch.tensor(rank["grads"][name]), torch.tensor(grad), rtol=1e-4, atol=1e-6,
                                       msg=name)
    assert any(abs(g) > 0 for g in want_grads["logit_scale"]), "the temperature learns"


def test_the_text_encoder_is_causal_and_reads_the_end_of_text_token():
    model, _, tokens = _model()
    model.eval()
    changed = tokens.clone()
    eot = (tokens == 2).int().argmax(dim=1)
    row = int(torch.argmax((eot < LENGTH - 1).int()))  # a row with tokens after its <eot>
    changed[row, eot[row] + 1 :] = 5
    with torch.no_grad():
        before, after = model.encode_text(tokens), model.encode_text(changed)
        torch.testing.assert_close(before, after)  # tokens after <eot> are never seen
        changed[row, 1] = 7 if tokens[row, 1] != 7 else 8
        assert not torch.allclose(model.encode_text(changed)[row], before[row])


def test_the_temperature_starts_at_one_over_0_07_and_is_clamped_at_100():
    model, _, _ = _model()
    assert model.logit_scale.exp().item() == pytest.approx(1 / 0.07)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(500.0))
    model.clamp_scale()
    assert model.logit_scale.exp().item() == pytest.approx(100.0)


@pytest.mark.parametrize("encoder", ["cnn", "resnet", "vit"])
def test_one_step_of_each_image_encoder_scores_retrieval_zero_shot_and_probe(encoder, tmp_path):
    run = tmp_path / "run"
    cli_in_process([*SMALL, f"model.image_encoder={encoder}", "trainer.max_steps=1", f"hydra.run.dir={run}"])
    record = read_jsonl(run / "metrics.jsonl")[-1]
    assert record["train_loss"] > 0
    for key in ("zero_shot_acc", "linear_probe_acc", "t2i_r5", "i2t_r1"):
        assert 0 <= record[key] <= 1, key
    saved = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert saved["models"]["model"]["logit_scale"].exp() <= 100.0


def test_predict_ranks_the_given_labels_for_each_image(tmp_path):
    run = tmp_path / "run"
    cli_in_process([*SMALL, "trainer.max_steps=1", f"hydra.run.dir={run}"])
    folder = scene_photos(tmp_path / "photos", 3, image_size=16)
    out = tmp_path / "predict"
    ckpt = run / "checkpoints" / "best.pt"
    cli_in_process([*SMALL, "mode=predict", f"ckpt={ckpt}", f"input={folder}", "labels=[circle,square,triangle]",
                    f"hydra.run.dir={out}"])
    records = read_jsonl(out / "predictions.jsonl")
    cli_in_process([*SMALL, "mode=predict", f"ckpt={ckpt}", f"input={folder}", "labels='circle, square,triangle'",
                    f"hydra.run.dir={tmp_path / 'again'}"])
    assert read_jsonl(tmp_path / "again" / "predictions.jsonl") == records, "a list or one string of names"
    assert [r["input"].split("/")[-1] for r in records] == ["p0.png", "p1.png", "p2.png"]
    for record in records:
        assert list(record["top"]) and set(record["top"]) == {"circle", "square", "triangle"}
        assert sum(record["top"].values()) == pytest.approx(1.0)
        assert record["prediction"] == next(iter(record["top"])) == max(record["top"], key=record["top"].get)
    assert (out / "images" / "predictions.png").is_file()


def _shapes_as_image_folder(root, image_size: int):
    """ShapesWorld's train and val scenes as root/{train,val}/<shape>/<i>.png (lossless)."""
    from PIL import Image

    from cvtrain.data.shapesworld import SHAPES, ShapesWorldSpec, load_split

    for split, count in (("train", 64), ("val", 32)):
        data = load_split(split, count, ShapesWorldSpec(image_size=image_size))
        for i, (image, label) in enumerate(zip(data.images, data.labels)):
            folder = root / split / SHAPES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i}.png")
    return root


def test_a_trained_model_is_scored_zero_shot_on_any_classification_data_set(tmp_path, capsys):
    """The same val scenes as ShapesWorld and as an image folder (another data set, its
    classes from folder names): the same zero-shot accuracy; the folder has no captions,
    so no retrieval scores, and training on it is refused with the way to use it."""
    run = tmp_path / "run"
    cli_in_process([*SMALL, "trainer.max_steps=6", f"hydra.run.dir={run}"])
    ckpt = run / "checkpoints" / "last.pt"
    cli_in_process([*SMALL, "mode=eval", f"ckpt={ckpt}", "split=val", f"hydra.run.dir={tmp_path / 'shapes'}"])
    on_shapes = json.loads((tmp_path / "shapes" / "eval.json").read_text())
    root = _shapes_as_image_folder(tmp_path / "folder", 16)
    # read at 32 pixels, as another data set's files would be: resized to the model's 16
    folder_args = ["dataset=image_folder", f"dataset.root={root}", "dataset.image_size=32"]
    cli_in_process(["task=clip", "mode=eval", f"ckpt={ckpt}", "split=val", *folder_args, "trainer.progress=none",
                    f"hydra.run.dir={tmp_path / 'eval'}"])
    on_folder = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert not any(key.startswith(("t2i", "i2t")) for key in on_folder), on_folder
    assert 0 <= on_folder["linear_probe_acc"] <= 1
    cli_in_process(["task=clip", "mode=eval", f"ckpt={ckpt}", "split=val", *folder_args[:2], "dataset.image_size=16",
                    "trainer.progress=none", f"hydra.run.dir={tmp_path / 'same_size'}"])
    same_size = json.loads((tmp_path / "same_size" / "eval.json").read_text())
    for key in ("zero_shot_acc", "linear_probe_acc"):  # the probe: on the same 64 training scenes
        assert same_size[key] == pytest.approx(on_shapes[key], abs=1 / 32 + 1e-9), key  # one image at most
    assert 0 <= on_folder["zero_shot_acc"] <= 1
    from conftest import compose_cfg

    from cvtrain.tasks.clip import ClipTask

    task = ClipTask(compose_cfg(["task=clip", *folder_args]))
    images, labels, names = task.labelled("train", 16)  # the linear probe's sample of a class-sorted folder
    assert images.shape == (16, 3, 32, 32) and len(set(labels.tolist())) >= 4, labels
    again = ClipTask(compose_cfg(["task=clip", *folder_args])).labelled("train", 16)
    assert torch.equal(again[0], images) and len(names) == 6, "seeded: the same sample every time"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli_in_process(["task=clip", *folder_args, "trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'train'}"])
    assert exited.value.code == 2
    assert "dataset=image_folder has no captions" in capsys.readouterr().err


def test_the_linear_probe_separates_separable_features_and_not_noise():
    from cvtrain.metrics.linear_probe import linear_probe_accuracy

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 5, generator=g) * 4
    labels = torch.randint(0, 3, (300,), generator=g)
    features = centres[labels] + torch.randn(300, 5, generator=g)
    assert linear_probe_accuracy(features[:200], labels[:200], features[200:], labels[200:], 3) > 0.95
    noise = torch.randn(300, 5, generator=g)
    assert linear_probe_accuracy(noise[:200], labels[:200], noise[200:], labels[200:], 3) < 0.6
    with torch.inference_mode():  # as an evaluation calls it
        assert linear_probe_accuracy(features[:200], labels[:200], features[200:], labels[200:], 3) > 0.95
