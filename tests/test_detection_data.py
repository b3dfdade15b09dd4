"""Detection and instance-segmentation data sets: COCO and VOC on disk, ShapesWorld in memory.

The on-disk sets are written by tests/dense_fixtures.py, which returns what it wrote;
each reader is checked against that, against pycocotools, and against cvtrain's own
scorer (perfect detections must score mAP 1.0, and wrong category ids must not).
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import shutil
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import torch
from conftest import compose_cfg
from dense_fixtures import COCO_CATEGORY_IDS, write_coco_fixture, write_voc_fixture
from torch.utils.data import DataLoader

from cvtrain.data.coco import annotation_mask
from cvtrain.data.detection import collate_detection
from cvtrain.data.shapesworld import SHAPES
from cvtrain.data.voc import voc_box
from cvtrain.errors import UserError
from cvtrain.metrics.detection import evaluate_coco
from cvtrain.registry import DATASETS


@pytest.fixture(scope="module")
def coco_fx(tmp_path_factory):
    return write_coco_fixture(tmp_path_factory.mktemp("coco"))


@pytest.fixture(scope="module")
def voc_fx(tmp_path_factory):
    return write_voc_fixture(tmp_path_factory.mktemp("voc"))


def dataset_cfg(overrides: list[str]):
    return compose_cfg(["task=classification", *overrides]).dataset


def build(name: str, family: str, overrides: list[str], split: str = "val"):
    return DATASETS.get(name, (family,))(dataset_cfg(overrides), split)


def copy_fixture(fx, tmp_path):
    """A private copy of a module-wide fixture, for tests that break it, and its overrides."""
    root = tmp_path / "copy"
    shutil.copytree(fx.root, root)
    return root, [o if not o.startswith("dataset.root=") else f"dataset.root={root}" for o in fx.overrides]


def user_error(fn, *args) -> str:
    """The message of the UserError `fn(*args)` raises; it must be one line."""
    with pytest.raises(UserError) as caught:
        fn(*args)
    message = str(caught.value)
    assert "\n" not in message
    return message


def perfect_results(ds, with_masks: bool) -> list[dict]:
    """One detection per training target, in COCO results format, named by category id."""
    from pycocotools import mask as mask_utils

    results = []
    for i in range(len(ds)):
        sample = ds[i]
        for k, ((x0, y0, x1, y1), label) in enumerate(zip(sample["boxes"].tolist(), sample["labels"].tolist())):
            result = {"image_id": int(sample["index"]), "category_id": ds.category_ids[label - 1],
                      "bbox": [x0, y0, x1 - x0, y1 - y0], "score": 1.0}
            if with_masks:
                rle = mask_utils.encode(np.asfortranarray(sample["masks"][k].numpy()))
                result["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            results.append(result)
    return results


# --- COCO ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["detection", "instance_segmentation"])
def test_coco_samples_are_what_the_fixture_wrote(coco_fx, family):
    ds = build("coco", family, coco_fx.overrides)
    expected = coco_fx.images["val"]
    assert len(ds) == len(expected)
    assert ds.class_names == list(SHAPES) and ds.category_ids == list(COCO_CATEGORY_IDS)
    assert ds.with_masks == (family == "instance_segmentation")
    for i, want in enumerate(expected):
        sample = ds[i]
        assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, want.height, want.width)
        assert np.array_equal(sample["image"].permute(1, 2, 0).numpy(), want.image)
        assert sample["boxes"].dtype == torch.float32 and np.array_equal(sample["boxes"].numpy(), want.boxes)
        assert sample["labels"].dtype == torch.int64 and np.array_equal(sample["labels"].numpy(), want.labels)
        assert sample["index"].dtype == torch.int64 and int(sample["index"]) == i
        if family == "instance_segmentation":
            assert sample["masks"].dtype == torch.uint8
            assert np.array_equal(sample["masks"].numpy(), want.masks)
        else:
            assert "masks" not in sample


def test_coco_polygon_and_rle_masks_equal_pycocotools(coco_fx):
    from pycocotools.coco import COCO

    ds = build("coco", "instance_segmentation", coco_fx.overrides)
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCO(str(coco_fx.root / "annotations" / "instances_val2017.json"))
    kinds = set()
    for i, want in enumerate(coco_fx.images["val"]):
        anns = reference.loadAnns(reference.getAnnIds(imgIds=[want.image_id], iscrowd=False))
        masks = ds[i]["masks"].numpy()
        assert len(masks) == len(anns)
        for mask, ann in zip(masks, anns):
            assert np.array_equal(mask, reference.annToMask(ann))
        kinds.update(want.kinds)
    assert {"polygon", "polygons", "rle"} <= kinds


def test_two_part_polygon_paints_both_parts(coco_fx):
    """The fixture's two rectangles leave a one-column gap: a reader keeping one part fails here."""
    ds = build("coco", "instance_segmentation", coco_fx.overrides)
    want = coco_fx.images["val"][0]
    part = want.kinds.index("polygons")
    x0, y0, x1, y1 = (int(v) for v in want.boxes[part])
    mask = ds[0]["masks"][part].numpy()
    assert mask[y0:y1, x0:x1].sum() == (y1 - y0) * (x1 - x0 - 1)
    assert mask[y0, x0] == 1 and mask[y0, x1 - 1] == 1


def test_degenerate_polygon_parts_are_skipped():
    ann = {"bbox": [1, 1, 3, 3], "segmentation": [[1, 1, 4, 4], [1, 1, 4, 1, 4, 4, 1, 4]]}
    expected = np.zeros((6, 6), np.uint8)
    expected[1:4, 1:4] = 1
    assert np.array_equal(annotation_mask(ann, 6, 6), expected)
    assert annotation_mask({"bbox": [1, 1, 3, 3], "segmentation": [[1, 1, 4, 4]]}, 6, 6).sum() == 0


def test_coco_crowds_are_no_targets_but_stay_in_the_ground_truth(coco_fx):
    ds = build("coco", "instance_segmentation", coco_fx.overrides)
    gt = ds.coco_ground_truth()
    expected = coco_fx.images["val"]
    assert sum(len(e.ignored_boxes) for e in expected) == 1
    for i, want in enumerate(expected):
        anns = [a for a in gt["annotations"] if a["image_id"] == i]
        crowds = [a for a in anns if a["iscrowd"] == 1]
        assert len(crowds) == len(want.ignored_boxes)
        assert len(anns) - len(crowds) == len(ds[i]["boxes"]) == len(want.boxes)
        for crowd, (x0, y0, x1, y1), label in zip(crowds, want.ignored_boxes.tolist(), want.ignored_labels):
            assert crowd["bbox"] == [x0, y0, x1 - x0, y1 - y0]
            assert crowd["category_id"] == COCO_CATEGORY_IDS[label - 1]


def test_coco_ground_truth_is_indexed_by_sample(coco_fx):
    ds = build("coco", "detection", coco_fx.overrides)
    gt = ds.coco_ground_truth()
    expected = coco_fx.images["val"]
    assert [im["id"] for im in gt["images"]] == list(range(len(ds)))
    assert [(im["height"], im["width"]) for im in gt["images"]] == [(e.height, e.width) for e in expected]
    assert [c["id"] for c in gt["categories"]] == list(COCO_CATEGORY_IDS)
    assert [c["name"] for c in gt["categories"]] == list(SHAPES)
    ids = [a["id"] for a in gt["annotations"]]
    assert min(ids) >= 1 and len(set(ids)) == len(ids)
    assert not [a for a in gt["annotations"] if a["image_id"] == len(ds) - 1]  # the blank image is kept
    assert len(ds[len(ds) - 1]["boxes"]) == 0
    for i in range(len(ds)):
        boxes = [a["bbox"] for a in gt["annotations"] if a["image_id"] == i and not a["iscrowd"]]
        x0, y0, x1, y1 = ds[i]["boxes"].unbind(1)
        assert boxes == torch.stack([x0, y0, x1 - x0, y1 - y0], 1).tolist()


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_perfect_coco_detections_score_map_1(coco_fx, iou_type):
    ds = build("coco", "instance_segmentation", coco_fx.overrides)
    gt = ds.coco_ground_truth()
    results = perfect_results(ds, with_masks=iou_type == "segm")
    crowd = next(a for a in gt["annotations"] if a["iscrowd"])
    on_crowd = {"image_id": crowd["image_id"], "category_id": crowd["category_id"], "bbox": crowd["bbox"], "score": 0.9}
    if iou_type == "segm":
        from pycocotools import mask as mask_utils

        rle = mask_utils.frPyObjects(crowd["segmentation"], *crowd["segmentation"]["size"])
        on_crowd["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    results.append(on_crowd)  # a hit on a crowd is neither a true nor a false positive
    assert evaluate_coco(gt, results, iou_type)["map"] == pytest.approx(1.0)


def test_class_indices_instead_of_category_ids_do_not_score_1(coco_fx):
    """The scorer test above can fail: the same boxes under the wrong category ids score less."""
    ds = build("coco", "detection", coco_fx.overrides)
    results = perfect_results(ds, with_masks=False)
    for result in results:
        result["category_id"] = ds.category_ids.index(result["category_id"]) + 1  # class index + 1
    known = set(COCO_CATEGORY_IDS)
    results = [r for r in results if r["category_id"] in known]
    assert evaluate_coco(ds.coco_ground_truth(), results, "bbox")["map"] < 0.9


def test_coco_jpeg_images_load(tmp_path):
    fx = write_coco_fixture(tmp_path, n=3, splits={"val": "val2017"}, image_format="jpg")
    ds = build("coco", "detection", fx.overrides)
    for i, want in enumerate(fx.images["val"]):
        assert np.array_equal(ds[i]["image"].permute(1, 2, 0).numpy(), want.image)


def test_coco_reads_nothing_but_the_json_up_front(coco_fx, monkeypatch):
    """COCO train has 118k images and 860k masks: they are decoded per sample, in the workers."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("decoded while building")

    monkeypatch.setattr("cvtrain.data.coco.annotation_mask", refuse)
    monkeypatch.setattr("cvtrain.data.detection.read_rgb", refuse)
    ds = build("coco", "instance_segmentation", coco_fx.overrides)
    assert len(ds.coco_ground_truth()["annotations"]) > 0
    with pytest.raises(AssertionError):
        ds[0]


@pytest.mark.parametrize(
    "classes, problem",
    [
        ([SHAPES[1], SHAPES[0], *SHAPES[2:]],
         "class 0 is 'square' in the dataset but the annotations' category 0 (id 1) is 'circle'"),
        ([*SHAPES, "moon"], "class 6 ('moon') has no category"),
        (list(SHAPES[:-1]), "category id 20 ('diamond') has no class"),
    ],
    ids=["wrong-order", "extra", "missing"],
)
def test_coco_classes_that_disagree_with_the_categories_are_refused(coco_fx, classes, problem):
    overrides = [*coco_fx.overrides, f"dataset.classes=[{','.join(classes)}]"]
    assert problem in user_error(build, "coco", "detection", overrides)


def test_coco_classes_that_agree_are_accepted(coco_fx):
    ds = build("coco", "detection", [*coco_fx.overrides, f"dataset.classes=[{','.join(SHAPES)}]"])
    assert ds.class_names == list(SHAPES)


def test_coco_image_of_another_size_than_the_json_says_is_refused(coco_fx, tmp_path):
    root, overrides = copy_fixture(coco_fx, tmp_path)
    path = root / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    data["images"][-1]["height"] += 1  # images are listed in reverse: this is sample 0
    path.write_text(json.dumps(data))
    ds = build("coco", "detection", overrides)
    message = user_error(ds.__getitem__, 0)
    assert coco_fx.images["val"][0].file_name in message and "do not match" in message


def test_coco_rle_of_another_size_than_its_image_is_refused(coco_fx, tmp_path):
    root, overrides = copy_fixture(coco_fx, tmp_path)
    path = root / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    ann = next(a for a in data["annotations"] if a["image_id"] == 1000 and isinstance(a["segmentation"], dict))
    ann["segmentation"]["size"] = [8, 8]
    path.write_text(json.dumps(data))
    ds = build("coco", "instance_segmentation", overrides)
    message = user_error(ds.__getitem__, 0)
    assert f"annotation {ann['id']} has an RLE of size [8, 8]" in message


def test_grayscale_images_come_back_as_rgb(coco_fx, tmp_path):
    from PIL import Image

    root, overrides = copy_fixture(coco_fx, tmp_path)
    path = root / "val2017" / coco_fx.images["val"][0].file_name
    Image.open(path).convert("L").save(path)
    image = build("coco", "detection", overrides)[0]["image"]
    assert image.shape == (3, coco_fx.images["val"][0].height, coco_fx.images["val"][0].width)
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])


@pytest.mark.parametrize(
    "breakage, key, named",
    [
        ("no-root", "dataset.root is required", ""),
        ("bad-root", "dataset.root: no such folder", "nowhere"),
        ("annotations", "dataset.annotations: no such file", "instances_val2017.json"),
        ("image-dir", "dataset.image_dir: no such folder", "val2017"),
        ("image", "dataset.image_dir: image", "000000001000.png"),
        ("split", "dataset.splits has no 'val' entry", "dataset.splits.val="),
    ],
)
def test_coco_missing_paths_name_the_path_and_the_key(coco_fx, tmp_path, breakage, key, named):
    root, overrides = copy_fixture(coco_fx, tmp_path)
    if breakage == "no-root":
        overrides = [o for o in overrides if not o.startswith("dataset.root=")]
    elif breakage == "bad-root":
        overrides.append(f"dataset.root={tmp_path / 'nowhere'}")
    elif breakage == "annotations":
        (root / "annotations" / "instances_val2017.json").unlink()
    elif breakage == "image-dir":
        shutil.rmtree(root / "val2017")
    elif breakage == "image":
        (root / "val2017" / "000000001000.png").unlink()
    else:
        overrides = [o for o in overrides if not o.startswith("dataset.splits.")]
        overrides.append("~dataset.splits.val")
    message = user_error(build, "coco", "detection", overrides)
    assert key in message and named in message


# --- VOC -------------------------------------------------------------------------------


def test_voc_box_turns_1_based_inclusive_pixels_into_0_based_edges():
    assert voc_box(1, 1, 500, 375) == (0, 0, 500, 375)  # the whole 500x375 image
    x0, y0, x1, y1 = voc_box(7, 9, 7, 9)  # one pixel: column 6, row 8 (0-based)
    assert (x0, y0, x1 - x0, y1 - y0) == (6, 8, 1, 1)


def test_voc_samples_are_what_the_fixture_wrote(voc_fx):
    ds = build("voc", "detection", voc_fx.overrides, split="train")
    expected = voc_fx.images["train"]
    assert len(ds) == len(expected)
    assert ds.class_names == list(voc_fx.class_names) and ds.category_ids == list(range(1, 21))
    for i, want in enumerate(expected):
        sample = ds[i]
        assert sample["image"].shape == (3, want.height, want.width)
        assert np.array_equal(sample["image"].permute(1, 2, 0).numpy(), want.image)
        assert sample["boxes"].dtype == torch.float32 and np.array_equal(sample["boxes"].numpy(), want.boxes)
        assert sample["labels"].dtype == torch.int64 and np.array_equal(sample["labels"].numpy(), want.labels)
        assert int(sample["index"]) == i and "masks" not in sample
    assert sum(len(e.ignored_boxes) for e in expected) == 1  # the difficult object, not trained on


def test_voc_boxes_are_the_xml_minus_one_at_the_minima(voc_fx):
    ds = build("voc", "detection", voc_fx.overrides, split="val")
    first = ds[0]["boxes"][0].tolist()
    box = ET.parse(voc_fx.root / "Annotations" / f"{voc_fx.images['val'][0].image_id}.xml").find("object/bndbox")
    xml = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
    assert first == [xml[0] - 1, xml[1] - 1, xml[2], xml[3]]


def test_voc_ground_truth_ignores_difficult_objects_and_scores_perfect_detections_1(voc_fx):
    ds = build("voc", "detection", voc_fx.overrides)
    gt = ds.coco_ground_truth()
    assert [im["id"] for im in gt["images"]] == list(range(len(ds)))
    assert [(im["height"], im["width"]) for im in gt["images"]] == [(e.height, e.width) for e in voc_fx.images["val"]]
    difficult = [a for a in gt["annotations"] if a["iscrowd"]]
    (x0, y0, x1, y1), = voc_fx.images["val"][0].ignored_boxes.tolist()
    assert len(difficult) == 1 and difficult[0]["bbox"] == [x0, y0, x1 - x0, y1 - y0]
    results = perfect_results(ds, with_masks=False)
    results.append({"image_id": 0, "category_id": difficult[0]["category_id"], "bbox": difficult[0]["bbox"],
                    "score": 0.9})  # detecting a difficult object costs nothing
    assert evaluate_coco(gt, results, "bbox")["map"] == pytest.approx(1.0)
    results[0]["bbox"] = [v + 3 for v in results[0]["bbox"]]  # and a misplaced box does cost
    assert evaluate_coco(gt, results, "bbox")["map"] < 1.0


def test_voc_xml_without_size_takes_it_from_the_image(voc_fx, tmp_path):
    root, overrides = copy_fixture(voc_fx, tmp_path)
    want = voc_fx.images["val"][0]
    path = root / "Annotations" / f"{want.image_id}.xml"
    tree = ET.parse(path)
    tree.getroot().remove(tree.getroot().find("size"))
    tree.write(path)
    ds = build("voc", "detection", overrides)
    image = ds.coco_ground_truth()["images"][0]
    assert (image["height"], image["width"]) == (want.height, want.width)
    assert np.array_equal(ds[0]["boxes"].numpy(), want.boxes)


def test_voc_with_its_own_class_list(tmp_path):
    fx = write_voc_fixture(tmp_path, n=3, classes=SHAPES, shape_names=SHAPES)
    ds = build("voc", "detection", fx.overrides, split="train")
    assert ds.class_names == list(SHAPES)
    for i, want in enumerate(fx.images["train"]):
        assert np.array_equal(ds[i]["labels"].numpy(), want.labels)


def test_voc_object_outside_the_class_list_is_refused(tmp_path):
    fx = write_voc_fixture(tmp_path, n=3, classes=SHAPES, shape_names=SHAPES)
    overrides = [o for o in fx.overrides if not o.startswith("dataset.classes=")]
    message = user_error(build, "voc", "detection", overrides, "train")
    first = fx.images["train"][0]
    name = SHAPES[first.labels[0] - 1]  # the first object of the first file
    assert f"{first.image_id}.xml'" in message and f"named '{name}'" in message and "dataset.classes=[" in message


def test_voc_duplicate_class_is_refused(voc_fx):
    message = user_error(build, "voc", "detection", [*voc_fx.overrides, "dataset.classes=[cat,dog,cat]"])
    assert "'cat'" in message and "more than once" in message


@pytest.mark.parametrize(
    "breakage, named",
    [
        ("Annotations", "Annotations/"),
        ("ImageSets/Main/val.txt", "ImageSets/Main/val.txt"),
        ("xml", ".xml' is missing"),
        ("JPEGImages", "JPEGImages/"),
        ("image", ".jpg' listed in the split file is missing"),
    ],
)
def test_voc_missing_paths_are_named(voc_fx, tmp_path, breakage, named):
    root, overrides = copy_fixture(voc_fx, tmp_path)
    first = voc_fx.images["val"][0].image_id
    target = {"xml": root / "Annotations" / f"{first}.xml", "image": root / "JPEGImages" / f"{first}.jpg"}.get(
        breakage, root / breakage)
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    message = user_error(build, "voc", "detection", overrides)
    assert named in message and "dataset." in message


# --- batching and ShapesWorld -----------------------------------------------------------


def test_collate_batches_images_of_different_sizes(coco_fx):
    ds = build("coco", "instance_segmentation", coco_fx.overrides)
    loader = DataLoader(ds, batch_size=3, collate_fn=collate_detection, num_workers=1)
    batch = next(iter(loader))
    sizes = [tuple(image.shape) for image in batch["images"]]
    assert len(set(sizes)) == 3
    assert batch["index"].tolist() == [0, 1, 2]
    for target, image, want in zip(batch["targets"], batch["images"], coco_fx.images["val"]):
        assert set(target) == {"boxes", "labels", "masks"}
        assert target["masks"].shape[1:] == image.shape[1:]
        assert np.array_equal(target["boxes"].numpy(), want.boxes)
    copy = pickle.loads(pickle.dumps(ds))  # what a spawned worker receives
    assert torch.equal(copy[2]["masks"], ds[2]["masks"])


@pytest.mark.parametrize("family", ["detection", "instance_segmentation"])
def test_shapes_builders_still_work(family):
    ds = build("shapes", family, ["dataset=shapes", "dataset.num_val=8", "dataset.image_size=32"])
    batch = collate_detection([ds[i] for i in range(4)])
    assert batch["images"][0].shape == (3, 32, 32) and batch["index"].tolist() == [0, 1, 2, 3]
    assert ("masks" in batch["targets"][0]) == (family == "instance_segmentation")
    assert ds.category_ids == list(range(1, len(SHAPES) + 1))
    results = perfect_results(ds, with_masks=family == "instance_segmentation")
    iou_type = "segm" if family == "instance_segmentation" else "bbox"
    assert evaluate_coco(ds.coco_ground_truth(), results, iou_type)["map"] == pytest.approx(1.0)
