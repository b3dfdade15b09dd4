"""DiffAugment (cvtrain/tasks/diff_augment.py): each transform does what the paper's does,
is differentiable, and the gan task puts it between G and D when task.diff_augment asks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_cfg

from cvtrain.errors import UserError
from cvtrain.tasks.diff_augment import color, cutout, diff_augment, parse_policy, translation


def _images(n=16, size=16):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _shift(image, dy, dx):
    """The reference: image moved by (dy, dx), zeros moving in."""
    h, w = image.shape[-2:]
    padded = F.pad(image, [w, w, h, h])
    return padded[:, h + dy:2 * h + dy, w + dx:2 * w + dx]


def test_translation_moves_each_image_by_at_most_an_eighth_and_fills_with_zeros():
    images = _images()
    torch.manual_seed(1)
    out = translation(images)
    shifts = []
    for image, moved in zip(images, out):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(_shift(image, dy, dx), moved)]
        assert len(found) == 1, "each output is its input shifted by one (dy, dx) within ±2 px of 16"
        shifts.append(found[0])
    assert len(set(shifts)) > 3, "the shift is drawn per image"


def test_cutout_zeroes_one_square_of_half_the_side_and_keeps_the_rest():
    images = _images() + 3  # no pixel is zero before the cutout
    torch.manual_seed(2)
    out = cutout(images)
    zeroed = out == 0
    assert torch.equal(out[~zeroed], images[~zeroed]), "pixels outside the square are untouched"
    for mask in zeroed.all(dim=1):  # the same square in every channel
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8, "a square of side 8 (clipped at the border)"
        assert mask.sum() == len(rows) * len(cols), "a rectangle, not scattered pixels"
    assert zeroed.all(dim=1).sum(dim=(1, 2)).float().mean() > 20, "mostly inside the image: ~64 px of 256"


def test_color_shifts_brightness_and_scales_saturation_and_contrast_per_image():
    grey = torch.zeros(64, 3, 8, 8)  # no saturation or contrast: only the brightness shift shows
    torch.manual_seed(3)
    out = color(grey)
    assert torch.allclose(out, out[:, :1, :1, :1].expand_as(out)), "a flat image stays flat"
    offsets = out[:, 0, 0, 0]
    assert offsets.min() >= -0.5 and offsets.max() <= 0.5 and offsets.std() > 0.2, "brightness ±0.5 per image"
    images = _images()
    torch.manual_seed(3)
    assert not torch.allclose(color(images), images)


def test_the_transforms_pass_gradients_to_the_generator():
    fake = _images().requires_grad_(True)
    out = diff_augment(fake, parse_policy(["color", "translation", "cutout"]))
    (out * torch.randn_like(out)).sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_an_empty_policy_is_the_identity_and_an_unknown_name_lists_the_valid_ones():
    images = _images()
    assert diff_augment(images, parse_policy([])) is images
    with pytest.raises(UserError, match=r"unknown task.diff_augment transform 'colour'.*Did you mean 'color'.*cutout"):
        parse_policy(["colour", "cutout"])


def test_the_gan_task_shows_d_augmented_reals_and_fakes(tmp_path, monkeypatch):
    """With task.diff_augment, every image D sees in a step went through the transforms:
    real and fake in D's step, fake in G's (DiffAugment's rule; else G learns the augmentation)."""
    from cvtrain.engine.trainer import Trainer
    from cvtrain.registry import TASKS
    from cvtrain.tasks import gan

    cfg = compose_cfg(["task=gan", "model=dcgan", "dataset.num_train=32", "dataset.num_val=16", "dataset.batch_size=16",
                       "dataset.eval_batch_size=16", "trainer.progress=none", "trainer.num_threads=1",
                       "trainer.device=cpu", "trainer.max_steps=1", "logger.images=false",
                       "task.diff_augment=[translation,cutout]"])
    seen = []
    real_augment = gan.diff_augment
    monkeypatch.setattr(gan, "diff_augment", lambda images, policy: seen.append(policy) or real_augment(images, policy))
    trainer = Trainer(cfg, TASKS.get("gan")(cfg), tmp_path)
    trainer.fit()
    assert seen == [("translation", "cutout")] * 3, "real and fake for D, fake for G"
