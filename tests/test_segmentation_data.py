"""Segmentation data sets: ShapesWorld masks, VOC palette PNGs, COCO instances painted as classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import compose_cfg
from dense_fixtures import write_coco_fixture, write_voc_fixture
from PIL import Image

from cvtrain.data.shapesworld import SHAPES
from cvtrain.data.voc import VOC_CLASSES
from cvtrain.errors import UserError
from cvtrain.registry import DATASETS

SIZE = 32


def dataset(overrides: list[str], split: str = "train"):
    cfg = compose_cfg(["task=segmentation", f"dataset.image_size={SIZE}", *overrides]).dataset
    return DATASETS.get(cfg.name, ("segmentation",))(cfg, split)


def resized(array: np.ndarray, resample) -> np.ndarray:
    """What a reader should give for a full-size array: PIL's resize to SIZE x SIZE."""
    return np.asarray(Image.fromarray(array).resize((SIZE, SIZE), resample))


def test_shapes_masks_are_the_scenes_semantic_maps():
    from cvtrain.data.shapesworld import ShapesWorldSpec, load_split

    data = dataset(["dataset.num_train=64"])
    assert data.class_names == ["background", *SHAPES] and data.ignore_index == 255 and data.in_channels == 3
    batch = data.batch(torch.tensor([0, 5]))
    assert batch["image"].shape == (2, 3, SIZE, SIZE) and batch["mask"].shape == (2, SIZE, SIZE)
    assert batch["mask"].dtype == torch.uint8
    scenes = load_split("train", 64, ShapesWorldSpec(image_size=SIZE))
    assert np.array_equal(batch["mask"][1].numpy(), scenes.semantic[5])
    assert set(np.unique(scenes.semantic[:64])) <= set(range(7)) and len(np.unique(scenes.semantic[:64])) == 7


def test_voc_palette_pngs_with_borders(tmp_path):
    fx = write_voc_fixture(tmp_path / "voc", n=4)
    data = dataset(fx.overrides, "val")
    assert data.class_names == ["background", *VOC_CLASSES] and len(data) == 4
    for i, expected in enumerate(fx.images["val"]):
        sample = data[i]
        assert sample["image"].shape == (3, SIZE, SIZE) and sample["mask"].dtype == torch.uint8
        assert np.array_equal(sample["mask"].numpy(), resized(expected.semantic, Image.NEAREST))
        image = resized(expected.image, Image.BILINEAR).transpose(2, 0, 1)
        assert np.abs(sample["image"].numpy().astype(int) - image).max() <= 1
    labels = {int(v) for i in range(4) for v in data[i]["mask"].unique()}
    assert 255 in labels and 0 in labels and labels - {0, 255} <= set(range(1, 21))


def test_voc_with_its_own_classes(tmp_path):
    fx = write_voc_fixture(tmp_path / "voc", n=3, classes=list(SHAPES), shape_names=SHAPES)
    data = dataset(fx.overrides)
    assert data.class_names == ["background", *SHAPES]
    assert int(max(data[i]["mask"][data[i]["mask"] != 255].max() for i in range(3))) <= 6


def test_voc_mask_with_a_label_outside_the_classes(tmp_path):
    fx = write_voc_fixture(tmp_path / "voc", n=3)
    png = tmp_path / "voc" / "SegmentationClass" / f"{fx.images['train'][1].image_id}.png"
    mask = np.array(Image.open(png))
    mask[0, 0] = 30
    bad = Image.fromarray(mask)
    bad.putpalette(Image.open(png).getpalette())
    bad.save(png)
    data = dataset(fx.overrides)
    data[0]  # the others read fine
    with pytest.raises(UserError, match="has label 30, outside the classes 0..20") as err:
        data[1]
    assert str(png) in str(err.value) and "\n" not in str(err.value)


def test_voc_rgb_mask_is_refused(tmp_path):
    fx = write_voc_fixture(tmp_path / "voc", n=3)
    png = tmp_path / "voc" / "SegmentationClass" / f"{fx.images['train'][0].image_id}.png"
    Image.open(png).convert("RGB").save(png)
    with pytest.raises(UserError, match="is a RGB image; VOC masks are palette"):
        dataset(fx.overrides)[0]


@pytest.mark.parametrize("problem", ["no_root", "missing_root", "no_split_file", "missing_mask"])
def test_voc_missing_paths_name_the_path(tmp_path, problem):
    fx = write_voc_fixture(tmp_path / "voc", n=3)
    overrides = list(fx.overrides)
    if problem == "no_root":
        overrides = ["dataset=voc"]
        expected = "dataset.root is required"
    elif problem == "missing_root":
        overrides.append(f"dataset.root={tmp_path / 'nope'}")
        expected = str(tmp_path / "nope")
    elif problem == "no_split_file":
        overrides.append("dataset.splits.train=trainval")
        expected = str(tmp_path / "voc" / "ImageSets" / "Segmentation" / "trainval.txt")
    else:
        path = tmp_path / "voc" / "SegmentationClass" / f"{fx.images['train'][2].image_id}.png"
        path.unlink()
        expected = str(path)
    with pytest.raises(UserError) as err:
        dataset(overrides)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_coco_polygons_rle_and_crowds_become_class_masks(tmp_path):
    fx = write_coco_fixture(tmp_path / "coco", n=4)
    data = dataset(fx.overrides, "train")
    assert data.class_names == ["background", *SHAPES] and len(data) == 4 and data.ignore_index == 255
    kinds = {kind for image in fx.images["train"] for kind in image.kinds}
    assert {"polygon", "polygons", "rle"} <= kinds
    for i, expected in enumerate(fx.images["train"]):
        assert np.array_equal(data[i]["mask"].numpy(), resized(expected.semantic, Image.NEAREST)), i
    assert (data[1]["mask"] == 255).any(), "the crowd of image 1 is ignored"
    assert not data[3]["mask"].any(), "the blank image is all background"


def test_coco_missing_annotations_name_the_file(tmp_path):
    fx = write_coco_fixture(tmp_path / "coco", n=3)
    (tmp_path / "coco" / "annotations" / "instances_val2017.json").unlink()
    dataset(fx.overrides, "train")
    with pytest.raises(UserError, match="dataset.annotations: no such file") as err:
        dataset(fx.overrides, "val")
    assert "instances_val2017.json" in str(err.value) and "\n" not in str(err.value)
