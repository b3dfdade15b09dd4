"""task=colorization: the ShapesWorld colour domain (equal lightness, colour from shape
and texture), pix2pix's networks, the ab bins (soft encoding, rebalancing, annealed
mean), one step of every objective, a model that learns, the photo folder and predict."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import compose_cfg, read_jsonl, run_cli, train_then_predict

from cvtrain.engine.trainer import Trainer
from cvtrain.registry import TASKS

TINY = ["task=colorization", "dataset.num_train=64", "dataset.num_val=32", "dataset.batch_size=16",
        "dataset.eval_batch_size=32", "model.width=8", "model.d_width=8", "trainer.progress=none",
        "trainer.num_threads=1", "trainer.device=cpu", "logger.max_images=4"]


def _trainer(tmp_path, *overrides):
    cfg = compose_cfg([*TINY, *overrides])
    return Trainer(cfg, TASKS.get("colorization")(cfg), tmp_path)


# --- the ShapesWorld colour domain ------------------------------------------------------


def test_the_hues_have_one_lightness_so_l_says_nothing_about_colour():
    from skimage.color import rgb2lab

    from cvtrain.data.shapesworld.colours import HUES

    lab = rgb2lab(np.array([HUES], dtype=np.float64) / 255)[0]
    assert np.ptp(lab[:, 0]) < 0.5, "equal L* within rounding"
    hues = np.degrees(np.arctan2(lab[:, 2], lab[:, 1])) % 360
    np.testing.assert_allclose(hues, 15 + 30 * np.arange(12), atol=1.5)


def test_colour_follows_shape_and_texture_seven_times_in_ten():
    from cvtrain.data.shapesworld import SHAPES
    from cvtrain.data.shapesworld.colours import draw_paint, typical_hue

    rng = np.random.default_rng(0)
    draws = [(shape, *draw_paint(shape, rng)) for _ in range(2000) for shape in SHAPES]
    typical = np.mean([hue == typical_hue(shape, striped) for shape, hue, striped in draws])
    assert 0.68 < typical < 0.72
    assert 0.48 < np.mean([striped for _, _, striped in draws]) < 0.52
    assert len({typical_hue(s, t) for s in SHAPES for t in (False, True)}) == 12, "every pair its own hue"


def test_the_colour_domain_keeps_the_scenes_and_backgrounds_of_shapesworld():
    from cvtrain.data.shapesworld import ShapesWorldSpec, load_split
    from cvtrain.data.shapesworld.colours import load_colour_split

    spec = ShapesWorldSpec(image_size=32)
    plain = load_split("val", 16, spec)
    colour = load_colour_split("val", 16, spec)
    assert colour.shape == plain.images.shape and colour.dtype == np.uint8
    far = plain.semantic == 0  # background pixels; anti-aliased rims may differ
    assert (colour[far] == plain.images[far]).all(-1).mean() > 0.97
    assert not np.array_equal(colour[plain.semantic > 0], plain.images[plain.semantic > 0])
    assert np.array_equal(load_colour_split("val", 16, spec), colour), "seeded and cached"


# --- networks -----------------------------------------------------------------------------


def test_the_networks_are_pix2pixs_unet_256_and_70x70_patchgan():
    from cvtrain.models.image_to_image import PatchDiscriminator, UNetGenerator

    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(UNetGenerator(3, 3, 64, 8, dropout=0.5)) == 54_413_955, "the reference's unet_256"
    critic = PatchDiscriminator(6, 64, 3).eval()
    assert count(critic) == 2_768_705, "the reference's basic (n_layers=3) D"
    x = torch.zeros(1, 6, 256, 256, requires_grad=True)
    out = critic(x)
    assert out.shape == (1, 1, 30, 30)
    out[0, 0, 15, 15].backward()
    rows = x.grad.abs().sum((0, 1, 3)).nonzero()
    assert int(rows.max() - rows.min() + 1) == 70, "each logit sees 70 x 70 pixels"


# --- ab bins ------------------------------------------------------------------------------


def test_soft_targets_rebalancing_and_the_annealed_mean():
    from cvtrain.tasks.ab_bins import ABBins
    from cvtrain.tasks.lab import AB_SCALE, split_lab

    bins = ABBins()
    assert 250 < len(bins) < 320, "the in-gamut bins of size 10"
    ab = torch.tensor([[3.0, -41.0], [0.0, 0.0]]).T.reshape(1, 2, 1, 2) / AB_SCALE
    target = bins.soft_targets(ab)
    assert torch.allclose(target.sum(1), torch.ones(1, 1, 2)) and ((target > 0).sum(1) == 5).all()
    nearest = bins.centres[target[0, :, 0, 0].argmax()]
    assert torch.equal(nearest, torch.tensor([0.0, -40.0]))
    logits = torch.randn(1, len(bins), 1, 1)
    probs = torch.softmax(logits, 1)[0, :, 0, 0]
    mean = (probs[:, None] * bins.centres).sum(0) / AB_SCALE
    assert torch.allclose(bins.decode(logits, temperature=1.0)[0, :, 0, 0], mean, atol=1e-6), "T = 1: the mean"
    mode = bins.centres[probs.argmax()] / AB_SCALE
    assert torch.allclose(bins.decode(logits, temperature=0.01)[0, :, 0, 0], mode, atol=1e-3), "T -> 0: the mode"
    grey = torch.full((4, 3, 8, 8), 120, dtype=torch.uint8)
    grey[0, :, :2, :2] = torch.tensor([200, 40, 40]).view(3, 1, 1)  # a few red pixels: a rare colour
    bins.fit_prior(grey)
    common = bins.nearest(torch.zeros(1, 2, 1, 1)).item()
    red = bins.nearest(split_lab(grey[:1, :, :1, :1])[1]).item()
    assert bins.weights[red] > 1.5 * bins.weights[common], "rare colours weigh more"
    assert bins.weights[common] < 1.0 < bins.weights[red], "weights of mean 1 under the prior"


# --- the task -----------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["l2", "cgan", "ab_classes"])
def test_every_objective_takes_a_step_and_is_scored(tmp_path, loss):
    trainer = _trainer(tmp_path, f"loss={loss}", "trainer.max_steps=1")
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in trainer.task.models.items()}
    results = trainer.fit()
    expected = {"generator": 1, "discriminator": 1} if loss == "cgan" else {"generator": 1}
    assert trainer.optimizer_steps == expected
    for name, module in trainer.task.models.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], module.parameters())), f"{name} did not train"
    assert {"psnr", "ssim", "colourfulness", "colourfulness_real"} <= set(results)
    assert 5 < results["psnr"] < 60 and 0 < results["ssim"] <= 1
    assert (tmp_path / "images" / "triptychs.png").is_file()
    if loss == "cgan":
        record = read_jsonl(tmp_path / "metrics.jsonl")[-1]
        assert {"train_loss_d", "train_l1", "train_g_gan", "train_d_real"} <= set(record)
        for optimizer in trainer.optimizers.values():
            group = optimizer.param_groups[0]
            assert type(optimizer) is torch.optim.Adam and tuple(group["betas"]) == (0.5, 0.999)
    if loss == "ab_classes":
        assert trainer.task.objective.fitted and not torch.allclose(trainer.task.objective.bins.weights,
                                                                    torch.ones(len(trainer.task.objective.bins)))
        state = torch.load(tmp_path / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
        assert torch.equal(state["task"]["ab_weights"], trainer.task.objective.bins.weights), "the prior is saved"


def test_an_l2_colorizer_learns(tmp_path):
    """Fits 16 images: the ab error of the last 20 steps is well under that of the first 20."""
    trainer = _trainer(tmp_path, "loss=l2", "dataset.num_train=16", "trainer.epochs=40", "optimizer.lr=2e-3",
                       "scheduler=none", "trainer.val_every=20", "logger.images=false", "task.augment=false")
    trainer.fit()
    first, last = read_jsonl(tmp_path / "metrics.jsonl")
    assert last["train_l2"] < 0.5 * first["train_l2"], (first, last)


def test_a_folder_of_photos_trains_and_predict_writes_the_colourings(tmp_path):
    from PIL import Image

    photos = tmp_path / "photos" / "nested"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    out = train_then_predict([*TINY, "dataset=image_folder", f"dataset.root={tmp_path / 'photos'}",
                              "dataset.val_fraction=0.34", "loss=ab_classes"], [f"input={photos}"], tmp_path)
    written = sorted((out / "colorized").glob("*.png"))
    assert [p.name for p in written] == [f"p{i}.png" for i in range(6)]
    with Image.open(written[0]) as image:
        assert image.size == (32, 32) and image.mode == "RGB"
    assert (out / "images" / "triptychs.png").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = run_cli([*TINY, "dataset=image_folder", f"dataset.root={empty}", f"hydra.run.dir={tmp_path / 'bad'}"],
                  cwd=tmp_path)
    assert bad.returncode == 2 and "holds no image files" in bad.stderr and "Traceback" not in bad.stderr


def test_the_photo_splits_are_seeded_and_use_train_val_folders_when_present(tmp_path):
    from cvtrain.data.colorization import photo_splits

    for name in ("a.png", "b.jpg", "c.png", "d.png", ".hidden.png", "notes.txt"):
        (tmp_path / "flat" / "x").mkdir(parents=True, exist_ok=True)
        (tmp_path / "flat" / "x" / name).write_bytes(b"")
    flat = photo_splits(str(tmp_path / "flat"), 0.25, 0)
    assert len(flat["train"]) == 3 and len(flat["val"]) == 1 and flat["test"] == flat["val"]
    assert flat == photo_splits(str(tmp_path / "flat"), 0.25, 0)
    for split in ("train", "val"):
        (tmp_path / "split" / split).mkdir(parents=True)
        (tmp_path / "split" / split / f"{split}.png").write_bytes(b"")
    layout = photo_splits(str(tmp_path / "split"), 0.25, 0)
    assert [p.rsplit("/", 1)[1] for p in layout["train"]] == ["train.png"] and layout["test"] == layout["val"]
