"""The pix2pix and CycleGAN folder layouts on tiny generated fixtures: pairs split and
swapped by direction, unpaired domains, and one clear error naming the folder or file
for a wrong layout or an image whose halves are not equal squares."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cvtrain.data.translation import AlignedPairs, UnalignedDomains
from cvtrain.errors import UserError


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _pix2pix(root, n=3, size=8):
    for split in ("train", "val", "test"):
        for i in range(n):
            a = np.full((size, size, 3), 10 * i, np.uint8)
            b = np.full((size, size, 3), 200 - 10 * i, np.uint8)
            _save(root / split / f"{i}.png", np.concatenate([a, b], axis=1))
    return root


def test_pix2pix_pairs_are_split_down_the_middle_and_swapped_by_direction(tmp_path):
    root = _pix2pix(tmp_path / "facades")
    pairs = AlignedPairs(str(root), "train", 4)
    assert len(pairs) == 3
    sample = pairs[1]
    assert sample["a"].shape == (3, 4, 4) and sample["a"].dtype == torch.uint8
    assert (sample["a"] == 10).all() and (sample["b"] == 190).all()
    swapped = AlignedPairs(str(root), "val", 4, direction="BtoA")[1]
    assert (swapped["a"] == 190).all() and (swapped["b"] == 10).all()


def test_a_pix2pix_file_that_is_not_two_equal_squares_is_named(tmp_path):
    root = _pix2pix(tmp_path / "facades")
    _save(root / "train" / "odd.png", np.zeros((8, 15, 3), np.uint8))
    with pytest.raises(UserError, match=r"odd\.png' is 15x8, but in the pix2pix layout .* side by side"):
        AlignedPairs(str(root), "train", 4)
    with pytest.raises(UserError, match="direction: 'AB' is not one of AtoB, BtoA"):
        AlignedPairs(str(root), "val", 4, direction="AB")


def test_a_cyclegan_folder_given_as_pix2pix_names_the_missing_folder(tmp_path):
    root = tmp_path / "horse2zebra"
    _save(root / "trainA" / "0.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserError, match=r"no folder '.*horse2zebra/train'; the layout is root/train"):
        AlignedPairs(str(root), "train", 4)
    with pytest.raises(UserError, match=r"no folder '.*horse2zebra/trainB'; the layout is root/trainA, root/trainB"):
        UnalignedDomains(str(root), "train", 4)


def test_cyclegan_domains_are_unpaired_seeded_and_as_long_as_the_larger(tmp_path):
    root = tmp_path / "h2z"
    for i in range(5):
        _save(root / "trainA" / f"{i}.png", np.full((6, 9, 3), i, np.uint8))  # any size: resized
    for i in range(3):
        _save(root / "trainB" / f"{i}.jpg", np.full((8, 8, 3), 100 + 50 * i, np.uint8))
    _save(root / "testA" / "0.png", np.zeros((8, 8, 3), np.uint8))
    _save(root / "testB" / "0.png", np.zeros((8, 8, 3), np.uint8))
    data = UnalignedDomains(str(root), "train", 4, seed=1)
    assert len(data) == 5
    assert [int(data[i]["a"][0, 0, 0]) for i in range(5)] == [0, 1, 2, 3, 4]
    b_values = [int(data[i]["b"].float().mean().round()) for i in range(3)]
    assert sorted(b_values) == [100, 150, 200], "each B image once per pass over B"
    assert [int(UnalignedDomains(str(root), "train", 4, seed=1)[i]["b"].float().mean()) for i in range(3)] == \
        [int(data[i]["b"].float().mean()) for i in range(3)], "the pairing is seeded"
    assert len(UnalignedDomains(str(root), "val", 4)) == 1, "val reads testA / testB"
    (root / "testB" / "0.png").unlink()
    with pytest.raises(UserError, match="testB' holds no image files"):
        UnalignedDomains(str(root), "test", 4)


def _shapes_cfg(n=8):
    from omegaconf import OmegaConf

    return OmegaConf.create({"image_size": 32, "min_objects": 1, "max_objects": 4, "seed": 0, "cache_dir": None,
                             "num_train": n, "num_val": n, "num_test": n})


def test_shapesworld_pairs_are_label_maps_or_edges_against_the_image():
    from cvtrain.data.shapesworld import ShapesWorldSpec, load_split
    from cvtrain.data.translation import shapes_pairs
    from cvtrain.tasks.palette import palette

    data = load_split("val", 8, ShapesWorldSpec(image_size=32))
    labels = shapes_pairs(_shapes_cfg(), "val", "labels")
    assert torch.equal(labels.fields["b"][0], torch.from_numpy(data.images[0]).permute(2, 0, 1))
    assert torch.equal(labels.fields["a"][0], torch.from_numpy(palette()[data.semantic[0]]).permute(2, 0, 1))
    edges = shapes_pairs(_shapes_cfg(), "val", "edges", direction="BtoA")
    assert torch.equal(edges.fields["b"][0, 1], torch.from_numpy(data.edges[0]))
    assert torch.equal(edges.fields["a"], labels.fields["b"]), "BtoA: the image is the input"
    with pytest.raises(UserError, match="pairs: 'depth' is not one of labels, edges"):
        shapes_pairs(_shapes_cfg(), "val", "depth")


def test_shapesworld_domains_are_flat_and_striped_renderings_of_different_scenes():
    from cvtrain.data.shapesworld import ShapesWorldSpec, load_split
    from cvtrain.data.translation import shapes_domains

    data = load_split("val", 8, ShapesWorldSpec(image_size=32))
    domains = shapes_domains(_shapes_cfg(), "val")
    assert len(domains) == 4
    assert torch.equal(domains.fields["a"][1], torch.from_numpy(data.images[2]).permute(2, 0, 1))
    assert torch.equal(domains.fields["b"][1], torch.from_numpy(data.striped[3]).permute(2, 0, 1))
