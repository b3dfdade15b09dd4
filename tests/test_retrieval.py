"""task=retrieval (VSE++): the recall scorer against a brute-force reference, the caption
readers on tiny fixtures, one step of each loss, predict, and a model that learns.
That vse trains, resumes, evaluates and predicts through the CLI is tests/test_contract.py's."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import cli_in_process, read_jsonl, scene_photos

from cvtrain.errors import UserError
from cvtrain.metrics.retrieval import retrieval_scores

SMALL = ["task=retrieval", "dataset.num_train=64", "dataset.num_val=32", "dataset.num_test=32",
         "dataset.batch_size=16", "dataset.eval_batch_size=32", "trainer.progress=none", "trainer.num_threads=1",
         "model.width=8", "model.word_dim=16", "model.hidden_dim=32", "model.embed_dim=32"]


# --- the scorer ----------------------------------------------------------------------

def _brute_force(similarity, caption_image, ks):
    """The COCO protocol written out: sort, then find the true image / the first own caption."""
    t2i, i2t = [], []
    for t, row in enumerate(similarity.tolist()):
        order = sorted(range(len(row)), key=lambda i: -row[i])
        t2i.append(order.index(int(caption_image[t])) + 1)
    for i, column in enumerate(similarity.T.tolist()):
        order = sorted(range(len(column)), key=lambda t: -column[t])
        i2t.append(next(pos for pos, t in enumerate(order) if int(caption_image[t]) == i) + 1)
    out = {}
    for name, ranks in (("t2i", t2i), ("i2t", i2t)):
        ranks = sorted(ranks)
        for k in ks:
            out[f"{name}_r{k}"] = sum(r <= k for r in ranks) / len(ranks)
        out[f"{name}_medr"] = float(ranks[(len(ranks) - 1) // 2])  # the lower median
        out[f"{name}_meanr"] = sum(ranks) / len(ranks)
    out["rsum"] = sum(v for key, v in out.items() if "_r" in key and not key.endswith(("medr", "meanr")))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_recall_and_ranks_match_a_brute_force_reference(seed):
    g = torch.Generator().manual_seed(seed)
    images = 7 + seed * 3
    per_image = torch.randint(1, 6, (images,), generator=g)  # 1 to 5 captions each, as COCO's 5 or fewer
    caption_image = torch.repeat_interleave(torch.arange(images), per_image)
    caption_image = caption_image[torch.randperm(len(caption_image), generator=g)]
    similarity = torch.randn(len(caption_image), images, generator=g)
    ks = (1, 2, 5)
    got = retrieval_scores(similarity, caption_image, ks)
    assert got == pytest.approx(_brute_force(similarity, caption_image, ks))


def test_a_perfect_embedding_scores_one_and_ranks_one():
    caption_image = torch.arange(4).repeat_interleave(5)
    similarity = torch.nn.functional.one_hot(caption_image, 4).float()
    scores = retrieval_scores(similarity, caption_image)
    assert scores["t2i_r1"] == scores["i2t_r1"] == 1.0 and scores["t2i_medr"] == scores["i2t_meanr"] == 1.0
    assert scores["rsum"] == 6.0


def test_an_image_without_captions_is_refused():
    with pytest.raises(ValueError, match="no caption"):
        retrieval_scores(torch.randn(3, 3), torch.tensor([0, 0, 1]))


# --- losses --------------------------------------------------------------------------

def test_hardest_negative_hinge_its_sum_variant_and_the_warm_up():
    from cvtrain.tasks.contrastive import VSEHinge

    scores = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.5, 0.6], [0.0, 0.0, 1.0]])
    targets = torch.arange(3)
    # margin 0.5, costs per row (image -> text): [0.4, 0], [0.2, 0.6], [0, 0];
    # per column (text -> image): [0, 0], [0.8, 0], [0, 0.1]
    hardest, summed = (0.4 + 0.6 + 0.8 + 0.1) / 3, (0.4 + 0.8 + 0.8 + 0.1) / 3
    assert VSEHinge(0.5, True)(scores, scores.T, targets).item() == pytest.approx(hardest)
    assert VSEHinge(0.5, False)(scores, scores.T, targets).item() == pytest.approx(summed)
    warm = VSEHinge(0.5, True, warmup_epochs=1)
    assert warm(scores, scores.T, targets, epoch=0).item() == pytest.approx(summed)
    assert warm(scores, scores.T, targets, epoch=1).item() == pytest.approx(hardest)


# --- data readers ----------------------------------------------------------------------

def _karpathy_fixture(tmp_path):
    from PIL import Image

    folder = tmp_path / "coco"
    images = []
    for i, split in enumerate(["train", "restval", "val", "test", "test"]):
        (folder / "val2014").mkdir(parents=True, exist_ok=True)
        name = f"im{i}.jpg"
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(folder / "val2014" / name)
        images.append({"split": split, "filepath": "val2014", "filename": name, "cocoid": 500 + i,
                       "sentences": [{"raw": f"Picture {i} caption {j}.", "tokens": []} for j in range(5 - (i == 4))]})
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return folder, path


def test_karpathy_split_reads_splits_paths_and_sentences(tmp_path):
    from omegaconf import OmegaConf

    from cvtrain.data.captions import karpathy_split

    folder, path = _karpathy_fixture(tmp_path)
    cfg = OmegaConf.create({"root": str(folder), "annotations": str(path), "seed": 0})
    train, val, test = (karpathy_split(cfg, s) for s in ("train", "val", "test"))
    assert train.image_ids == [500, 501], "restval joins train"
    assert val.image_ids == [502] and test.image_ids == [503, 504]
    assert test.references[1] == [f"Picture 4 caption {j}." for j in range(4)]
    assert all(p.is_file() for p in train.paths) and train.paths[0].parent.name == "val2014"


def test_karpathy_split_errors_are_one_line(tmp_path):
    from omegaconf import OmegaConf

    from cvtrain.data.captions import karpathy_split

    folder, _ = _karpathy_fixture(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [{"split": "train"}]}')
    with pytest.raises(UserError, match="is not a Karpathy split json"):
        karpathy_split(OmegaConf.create({"root": str(folder), "annotations": str(bad)}), "train")
    with pytest.raises(UserError, match="dataset.annotations is required"):
        karpathy_split(OmegaConf.create({"root": str(folder), "annotations": None}), "train")


def test_each_caption_reader_feeds_retrieval_with_real_caption_counts(tmp_path):
    """ShapesWorld (five per scene), COCO captions json and Karpathy json give images,
    (N, 5, L) tokens and how many captions are real."""
    from conftest import compose_cfg

    from cvtrain.tasks.retrieval import RetrievalTask

    folder, path = _karpathy_fixture(tmp_path)
    cfg = compose_cfg(["task=retrieval", "dataset=karpathy", f"dataset.root={folder}", f"dataset.annotations={path}",
                       "dataset.image_size=16", "dataset.min_freq=1"])
    data = RetrievalTask(cfg).build_dataset("test")
    assert len(data) == 2 and data[1]["num_captions"] == 4 and data[1]["captions"].shape[0] == 5
    assert data[0]["image"].shape == (3, 16, 16)
    shapes = RetrievalTask(compose_cfg(["task=retrieval", "dataset.num_val=8"])).build_dataset("val")
    assert shapes.fields["num_captions"].tolist() == [5] * 8


def test_retrieval_reads_shapesworlds_detailed_captions_and_captioning_its_varied_ones():
    """Retrieval's default captions name every object (each finds its own scene);
    dataset.captions=varied gives the annotator-style ones captioning is scored on."""
    from conftest import compose_cfg

    from cvtrain.data.captions import shapes_captions
    from cvtrain.data.shapes import load

    def references(overrides):
        cfg = compose_cfg([*overrides, "dataset.num_val=8", "dataset.image_size=16"])
        return cfg.dataset, shapes_captions(cfg.dataset, "val").references

    dataset, detailed = references(["task=retrieval"])
    assert detailed == load(dataset, "val").detailed_captions and dataset.max_caption_len >= 32
    _, varied = references(["task=retrieval", "dataset.captions=varied"])
    _, captioning = references(["task=captioning"])
    assert varied == captioning == load(dataset, "val").captions != detailed


# --- training and prediction --------------------------------------------------------

@pytest.mark.parametrize("loss", ["vse_hinge", "infonce", "vse_hinge loss.max_violation=false"])
def test_one_training_step_of_each_loss(loss, tmp_path):
    run = tmp_path / "run"
    cli_in_process([*SMALL, *f"loss={loss}".split(), "trainer.max_steps=1", f"hydra.run.dir={run}"])
    record = read_jsonl(run / "metrics.jsonl")[-1]
    assert record["train_loss"] > 0 and 0 <= record["t2i_r5"] <= 1 and record["i2t_medr"] >= 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("vse") / "run"
    cli_in_process([*SMALL, "trainer.max_steps=1", f"hydra.run.dir={run}"])
    return run / "checkpoints" / "best.pt"


def test_predict_query_saves_the_top_images_as_a_grid(trained, tmp_path, capsys):
    out = tmp_path / "predict"
    cli_in_process([*SMALL, "mode=predict", f"ckpt={trained}", "query=a small red circle", "task.top_k=4",
                    f"hydra.run.dir={out}"])
    (record,) = read_jsonl(out / "predictions.jsonl")
    assert record["input"] == "a small red circle" and len(record["top"]) == 4
    scores = [r["score"] for r in record["top"]]
    assert scores == sorted(scores, reverse=True) and record["prediction"] == record["top"][0]["image"]
    assert record["top"][0]["image"].startswith("test:")
    from PIL import Image

    with Image.open(out / "images" / "query.png") as grid:
        assert grid.width > 4 * 32 > grid.height  # one row of four 32-pixel images
    assert "a small red circle\ttest:" in capsys.readouterr().out


def test_predict_input_images_returns_their_best_sentences(trained, tmp_path):
    folder = scene_photos(tmp_path / "photos", 2)
    out = tmp_path / "predict"
    cli_in_process([*SMALL, "mode=predict", f"ckpt={trained}", f"input={folder}", f"hydra.run.dir={out}"])
    records = read_jsonl(out / "predictions.jsonl")
    assert [r["input"].split("/")[-1] for r in records] == ["p0.png", "p1.png"]
    assert all(r["prediction"] == r["top"][0]["sentence"] and len(r["top"]) == 8 for r in records)
    assert (out / "images" / "sentences.png").is_file()


@pytest.mark.slow
def test_vse_learns_retrieval_far_above_chance(tmp_path):
    """A short run on a small ShapesWorld (detailed captions): sentence -> image R@5 over
    128 images, where chance is 5/128 = 0.04 (0.80 measured)."""
    run = tmp_path / "run"
    cli_in_process(["task=retrieval", "dataset.num_train=1024", "dataset.num_val=128", "dataset.image_size=32",
                    "dataset.batch_size=64", "trainer.epochs=4", "trainer.val_every=4", "trainer.progress=none",
                    "model.width=16", f"hydra.run.dir={run}"])
    record = read_jsonl(run / "metrics.jsonl")[-1]
    assert record["t2i_r5"] > 0.6, record


def test_a_resnet18_image_encoder_loads_local_weights_and_refuses_unknown_encoders(tmp_path):
    import torchvision
    from omegaconf import OmegaConf

    from cvtrain.models.vse import vse

    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    cfg = OmegaConf.create({"image_encoder": "resnet18", "width": 16, "backbone_weights": str(path),
                            "freeze_backbone": False, "word_dim": 8, "hidden_dim": 8, "embed_dim": 8})
    model = vse(cfg, vocab_size=20, image_size=32)
    torch.testing.assert_close(model.image_encoder.backbone.conv1.weight, reference.conv1.weight)
    image, text = model(torch.randn(2, 3, 32, 32), torch.tensor([[1, 5, 2, 0], [1, 6, 7, 2]]))
    assert image.shape == text.shape == (2, 8)
    torch.testing.assert_close(image.norm(dim=1), torch.ones(2))
    with pytest.raises(UserError, match="model.image_encoder: unknown 'vit'"):
        vse(OmegaConf.merge(cfg, {"image_encoder": "vit"}), vocab_size=20, image_size=32)
