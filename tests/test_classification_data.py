"""Classification data builders: digits, image folders, MNIST and CIFAR-10 from disk."""

from __future__ import annotations

import struct

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from cvtrain.data import classification
from cvtrain.data.memory import InMemoryDataset
from cvtrain.errors import UserError
from cvtrain.registry import DATASETS

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


def make_cfg(name: str, **over) -> object:
    base = dict(name=name, root=None, image_size=8, val_fraction=0.1, seed=0, batch_size=4, num_workers=0)
    return OmegaConf.create({**base, **over})


def build(name: str, split: str, **over):
    return DATASETS.get(name, ("classification",))(make_cfg(name, **over), split)


def test_every_dataset_is_registered():
    assert {"image_folder", "digits", "mnist", "cifar10"} <= set(DATASETS.names(("classification",)))


# --- digits --------------------------------------------------------------------------


def digits_splits(**over):
    return {s: build("digits", s, **over) for s in classification.SPLITS}


def test_digits_splits_cover_all_without_overlap():
    splits = digits_splits(val_fraction=0.15)
    assert sum(len(d) for d in splits.values()) == 1797
    rows = {s: {bytes(img.numpy()) for img in d.fields["image"]} for s, d in splits.items()}
    assert sum(len(r) for r in rows.values()) == 1797  # the 1797 digit images are all distinct
    assert not rows["train"] & rows["val"] and not rows["train"] & rows["test"] and not rows["val"] & rows["test"]


def test_digits_split_indices_are_disjoint():
    labels = torch.arange(100) % 10
    rest, val, test = classification.stratified_split(labels, (0.1, 0.1), seed=3)
    joined = torch.cat([rest, val, test])
    assert len(joined) == 100 and len(torch.unique(joined)) == 100


def test_digits_are_stratified_and_deterministic():
    a, b, c = digits_splits(seed=1), digits_splits(seed=1), digits_splits(seed=2)
    val_counts = torch.bincount(a["val"].fields["label"], minlength=10)
    assert val_counts.min() >= 15 and val_counts.max() <= 20  # about 10% of ~180 per class
    assert torch.equal(a["val"].fields["image"], b["val"].fields["image"])
    assert not torch.equal(a["val"].fields["image"], c["val"].fields["image"])


def test_digits_images_are_uint8_and_resized():
    small = build("digits", "train", image_size=8)
    assert isinstance(small, InMemoryDataset)
    assert small.fields["image"].dtype == torch.uint8 and small.fields["image"].shape[1:] == (1, 8, 8)
    assert small.fields["image"].max() == 255 and small.fields["image"].min() == 0
    assert small.in_channels == 1 and small.class_names == [str(d) for d in range(10)]
    big = build("digits", "train", image_size=32)
    assert big.fields["image"].shape[1:] == (1, 32, 32) and big.fields["image"].dtype == torch.uint8
    sample = big[0]
    assert sample["label"].dtype == torch.int64 and sample["label"].ndim == 0


def test_bad_dataset_options():
    with pytest.raises(UserError):
        build("digits", "train", val_fraction=0.0)
    with pytest.raises(UserError):
        build("digits", "train", image_size=0)
    with pytest.raises(UserError):
        build("digits", "holdout")


# --- image folders -------------------------------------------------------------------


def write_images(folder, per_class: dict[str, int], size=(20, 12)):
    for cls, count in per_class.items():
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", size, COLOURS[cls]).save(folder / cls / f"{i}.png")


def assert_colours_match(ds):
    for i in range(len(ds)):
        sample = ds[i]
        colour = COLOURS[ds.class_names[int(sample["label"])]]
        assert sample["image"].dtype == torch.uint8
        assert sample["image"].shape == (3, 8, 8)
        assert sample["image"][:, 4, 4].tolist() == list(colour)


def test_image_folder_with_split_subfolders(tmp_path):
    write_images(tmp_path / "train", {"red": 3, "green": 2, "blue": 2})
    write_images(tmp_path / "val", {"red": 1, "blue": 1})
    train, val = build("image_folder", "train", root=str(tmp_path)), build("image_folder", "val", root=str(tmp_path))
    test = build("image_folder", "test", root=str(tmp_path))
    assert train.class_names == val.class_names == ["blue", "green", "red"]
    assert (len(train), len(val), len(test)) == (7, 2, 2)
    assert train.in_channels == 3
    assert_colours_match(train)
    assert_colours_match(val)


def test_image_folder_flat_is_split_by_seed(tmp_path):
    write_images(tmp_path, {"red": 10, "green": 10, "blue": 10})
    train = build("image_folder", "train", root=str(tmp_path), val_fraction=0.2)
    val = build("image_folder", "val", root=str(tmp_path), val_fraction=0.2)
    assert (len(train), len(val)) == (24, 6)
    assert train.class_names == ["blue", "green", "red"]
    assert torch.bincount(val.labels).tolist() == [2, 2, 2]
    assert not {p for p, _ in train.samples} & {p for p, _ in val.samples}
    again = build("image_folder", "val", root=str(tmp_path), val_fraction=0.2)
    assert again.samples == val.samples
    assert_colours_match(val)


def test_image_folder_val_class_missing_from_train(tmp_path):
    write_images(tmp_path / "train", {"red": 2})
    write_images(tmp_path / "val", {"red": 1, "blue": 1})
    with pytest.raises(UserError, match="blue"):
        build("image_folder", "train", root=str(tmp_path))


def test_image_folder_missing_and_empty_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError) as err:
        build("image_folder", "train", root=str(missing))
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(UserError, match="no images"):
        build("image_folder", "train", root=str(tmp_path / "empty"))


# --- MNIST / CIFAR-10 ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_root_names_the_path(name, tmp_path):
    missing = tmp_path / "data"
    with pytest.raises(UserError) as err:
        build(name, "train", root=str(missing))
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError):
        build(name, "train", root=None)
    missing.mkdir()
    with pytest.raises(UserError) as err:
        build(name, "test", root=str(missing))  # folder exists, files do not
    assert str(missing) in str(err.value) and "\n" not in str(err.value)


def write_idx(path, array: torch.Tensor) -> None:
    """An MNIST idx file (unsigned bytes) as torchvision reads it."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.to(torch.uint8).numpy().tobytes())


def test_fake_mnist_happy_path(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    labels = torch.arange(50) % 10
    images = (labels * 25).view(-1, 1, 1).expand(50, 28, 28).contiguous()
    for prefix, count in [("train", 50), ("t10k", 20)]:
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[:count])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[:count])
    train = build("mnist", "train", root=str(tmp_path), image_size=14, val_fraction=0.2)
    val = build("mnist", "val", root=str(tmp_path), image_size=14, val_fraction=0.2)
    test = build("mnist", "test", root=str(raw.parent), image_size=14)
    assert (len(train), len(val), len(test)) == (40, 10, 20)
    assert train.fields["image"].shape[1:] == (1, 14, 14) and train.in_channels == 1
    assert torch.equal(train.fields["image"][:, 0, 7, 7], (train.fields["label"] * 25).to(torch.uint8))
    assert sorted(val.fields["label"].tolist()) == list(range(10))
