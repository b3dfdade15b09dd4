"""COCO detection scores against pycocotools' COCOeval, the reference they must equal.

Both backends reproduce the published stats of the COCO API demo on
../shared/data/coco_val2014_100 (skipped when absent), and on COCO files generated here
(boxes, polygon and RLE masks, crowd boxes, gappy category ids) cvtrain's stats equal a
direct COCOeval run; then the one-line errors, the category check, the PR curve and the
`cvtrain-score detection` command.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_score_cli

from cvtrain.errors import UserError
from cvtrain.metrics.detection import (
    BACKENDS,
    STAT_NAMES,
    coco_evaluation,
    evaluate_coco,
    precision_recall,
    save_pr_curve,
    validate_categories,
)

from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

ROOT = Path(__file__).resolve().parents[1]
COCO100 = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_val2014_100"
needs_coco100 = pytest.mark.skipif(not COCO100.is_dir(), reason="../shared/data/coco_val2014_100 is absent")
IOU_TYPES = ("bbox", "segm")
HAVE_FASTER = importlib.util.find_spec("faster_coco_eval") is not None
INSTALLED = [b for b in BACKENDS if HAVE_FASTER or b != "faster_coco_eval"]
EACH_BACKEND = pytest.mark.parametrize(
    "backend",
    ["pycocotools", pytest.param("faster_coco_eval", marks=pytest.mark.skipif(not HAVE_FASTER, reason="not installed"))],
)
CATEGORY_IDS = [1, 2, 3, 5, 7, 11, 13]  # gaps, as COCO's ids have


def coco100(iou_type: str) -> tuple[Path, Path]:
    return COCO100 / "instances_val2014_100.json", COCO100 / f"instances_val2014_fake{iou_type}100_results.json"


# ---------------------------------------------------------------------------------
# The COCO API demo's published stats
# ---------------------------------------------------------------------------------


@needs_coco100
@EACH_BACKEND
@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_stats_equal_the_published_coco_demo_stats(iou_type, backend):
    expected = json.loads((COCO100 / "expected_stats.json").read_text())[iou_type]
    stats = evaluate_coco(*coco100(iou_type), iou_type=iou_type, backend=backend)
    assert list(stats) == list(STAT_NAMES)
    for name, value in zip(STAT_NAMES, expected):
        assert stats[name] == pytest.approx(value, abs=1e-9), name


@needs_coco100
def test_pr_curve_averages_to_ap50_and_is_saved(tmp_path):
    evaluation = coco_evaluation(*coco100("bbox"))
    recall, precision = evaluation.pr_curve(0.5)
    assert recall.shape == precision.shape == (101,)
    assert recall[0] == 0 and recall[-1] == 1
    assert np.all(np.diff(precision) <= 1e-12), "COCOeval's interpolated precision never rises with recall"
    assert precision.mean() == pytest.approx(evaluation.stats["map50"], abs=1e-12)
    path = save_pr_curve(recall, precision, tmp_path / "curves" / "pr.png", label="bbox")
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r2, p2 = precision_recall(*coco100("bbox"), iou=0.75, backend=INSTALLED[-1])
    assert p2.mean() == pytest.approx(evaluation.stats["map75"], abs=1e-9)
    np.testing.assert_array_equal(r2, recall)


# ---------------------------------------------------------------------------------
# Generated COCO files against a direct COCOeval run
# ---------------------------------------------------------------------------------


def make_coco(seed: int, images: int = 16, width: int = 96, height: int = 72) -> tuple[dict, dict]:
    """Ground truth (polygon masks, some crowd) and bbox + RLE-mask results near it."""
    rng = np.random.default_rng(seed)
    gt = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in CATEGORY_IDS]}
    results: dict[str, list] = {"bbox": [], "segm": []}
    for image_id in range(1, images + 1):
        gt["images"].append({"id": image_id, "width": width, "height": height})
        for _ in range(int(rng.integers(0, 7))):
            box = _box(rng, width, height)
            x, y, w, h = box
            polygon = [x, y, x + w, y, x + w * 0.7, y + h, x, y + h * 0.8]
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": int(rng.choice(CATEGORY_IDS)),
                "bbox": box, "area": float(mask_utils.area(_rle([polygon], height, width))),
                "segmentation": [polygon], "iscrowd": int(rng.random() < 0.08),
            })  # fmt: skip
        for _ in range(int(rng.integers(0, 25))):
            _add_result(rng, results, gt, image_id, width, height)
    return gt, results


def _box(rng, width: int, height: int) -> list[float]:
    w, h = float(rng.uniform(3, width * 0.8)), float(rng.uniform(3, height * 0.8))
    x, y = float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h))
    return [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]


def _add_result(rng, results: dict, gt: dict, image_id: int, width: int, height: int) -> None:
    """A jittered copy of a true object of the image (often) or a random box."""
    own = [a for a in gt["annotations"] if a["image_id"] == image_id]
    if own and rng.random() < 0.6:
        truth = own[int(rng.integers(len(own)))]
        x, y, w, h = (np.array(truth["bbox"]) + rng.normal(0, 2.0, 4)).tolist()
        w, h = max(w, 1.0), max(h, 1.0)
        category = truth["category_id"] if rng.random() < 0.8 else int(rng.choice(CATEGORY_IDS))
    else:
        x, y, w, h = _box(rng, width, height)
        category = int(rng.choice(CATEGORY_IDS))
    score = round(float(rng.random()), 4)
    box = [round(v, 2) for v in (x, y, w, h)]
    results["bbox"].append({"image_id": image_id, "category_id": category, "bbox": box, "score": score})
    mask = np.zeros((height, width), dtype=np.uint8)
    x0, y0 = int(max(x, 0)), int(max(y, 0))
    mask[y0 : int(y + h) + 1, x0 : int(x + w) + 1] = 1
    mask[y0 : y0 + int(h / 3), x0 : x0 + int(w / 3)] = 0  # not a rectangle
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    results["segm"].append({"image_id": image_id, "category_id": category, "segmentation": rle, "score": score})


def _rle(polygons, height, width):
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))


def write_coco(tmp_path: Path, gt: dict, results: list) -> tuple[Path, Path]:
    gt_path, results_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    results_path.write_text(json.dumps(results))
    return gt_path, results_path


def reference_stats(gt_path: Path, results_path: Path, iou_type: str, image_ids=None) -> np.ndarray:
    """pycocotools' COCOeval as its demo runs it."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(results_path)), iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_generated_files_match_a_direct_cocoeval_run(tmp_path, seed, iou_type):
    gt, results = make_coco(seed)
    gt_path, results_path = write_coco(tmp_path, gt, results[iou_type])
    expected = reference_stats(gt_path, results_path, iou_type)
    assert len({round(float(s), 6) for s in expected}) > 4, "a degenerate case tests little"
    for backend in INSTALLED:
        stats = evaluate_coco(gt_path, results_path, iou_type, backend)
        np.testing.assert_allclose([stats[k] for k in STAT_NAMES], expected, rtol=0, atol=1e-9, err_msg=backend)


def test_in_memory_inputs_are_left_unchanged_and_image_ids_restrict(tmp_path):
    gt, results = make_coco(11)
    before = json.dumps([gt, results["segm"]], sort_keys=True)
    first = evaluate_coco(gt, results["segm"], "segm")
    assert json.dumps([gt, results["segm"]], sort_keys=True) == before, "the caller's dicts were edited"
    assert evaluate_coco(gt, results["segm"], "segm") == first
    images = [2, 3, 5, 8, 13]
    expected = reference_stats(*write_coco(tmp_path, gt, results["bbox"]), "bbox", image_ids=images)
    for backend in INSTALLED:
        stats = evaluate_coco(gt, results["bbox"], "bbox", backend, image_ids=images)
        np.testing.assert_allclose([stats[k] for k in STAT_NAMES], expected, rtol=0, atol=1e-9)


def test_boxes_from_mask_only_results_as_loadres_takes_them(tmp_path):
    gt, results = make_coco(5)
    gt_path, results_path = write_coco(tmp_path, gt, results["segm"])
    stats = evaluate_coco(gt_path, results_path, "bbox")
    np.testing.assert_allclose([stats[k] for k in STAT_NAMES], reference_stats(gt_path, results_path, "bbox"), atol=1e-12)


# ---------------------------------------------------------------------------------
# One-line errors
# ---------------------------------------------------------------------------------


@pytest.fixture
def generated(tmp_path):
    gt, results = make_coco(3)
    return tmp_path, gt, results


def message(call) -> str:
    with pytest.raises(UserError) as error:
        call()
    text = str(error.value)
    assert "\n" not in text
    return text


def test_missing_and_malformed_files(generated):
    tmp_path, gt, results = generated
    gt_path, results_path = write_coco(tmp_path, gt, results["bbox"])
    assert "not found" in message(lambda: evaluate_coco(tmp_path / "nope.json", results_path))
    assert "nope.json" in message(lambda: evaluate_coco(gt_path, tmp_path / "nope.json"))
    results_path.write_text('[{"image_id": 1,')
    assert "not valid JSON" in message(lambda: evaluate_coco(gt_path, results_path))
    results_path.write_text('{"annotations": []}')
    assert "expected a JSON list" in message(lambda: evaluate_coco(gt_path, results_path))
    assert "not COCO instance annotations" in message(lambda: evaluate_coco({"annotations": []}, results["bbox"]))


def test_unknown_category_names_the_id_and_the_valid_ones(generated):
    _, gt, results = generated
    bad = results["bbox"] + [{**results["bbox"][0], "category_id": 91}]
    text = message(lambda: evaluate_coco(gt, bad))
    assert "category id 91, which the annotations do not define" in text
    assert "valid ids: 1..3, 5, 7, 11, 13" in text


def test_coco_category_ids_are_shown_as_runs():
    from cvtrain.metrics.detection.coco_inputs import id_ranges

    coco = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]
    assert id_ranges(coco) == "1..11, 13..25, 27..28, 31..44, 46..65, 67, 70, 72..82, 84..90"


def test_unknown_image_empty_results_and_missing_fields(generated):
    _, gt, results = generated
    stray = results["bbox"] + [{**results["bbox"][0], "image_id": 999}]
    assert "image id 999, which the annotations do not list" in message(lambda: evaluate_coco(gt, stray))
    assert "results list is empty" in message(lambda: evaluate_coco(gt, []))
    no_score = [{k: v for k, v in results["bbox"][0].items() if k != "score"}]
    assert "has no 'score'" in message(lambda: evaluate_coco(gt, no_score))
    text = message(lambda: evaluate_coco(gt, results["bbox"], "segm"))
    assert "no 'segmentation'" in text and "--iou-type bbox" in text
    assert "image id 77" in message(lambda: evaluate_coco(gt, results["bbox"], image_ids=[1, 77]))


def test_unknown_backend_and_iou_type_list_the_valid_ones(generated, monkeypatch):
    _, gt, results = generated
    text = message(lambda: evaluate_coco(gt, results["bbox"], backend="fast"))
    assert "unknown backend 'fast'" in text and "faster_coco_eval, pycocotools" in text
    assert "Valid: bbox, segm" in message(lambda: evaluate_coco(gt, results["bbox"], iou_type="keypoints"))
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # as if not installed
    text = message(lambda: evaluate_coco(gt, results["bbox"], backend="faster_coco_eval"))
    assert "pip install faster-coco-eval" in text


def test_pr_curve_iou_must_be_a_cocoeval_threshold(generated):
    _, gt, results = generated
    assert "0.50, 0.55" in message(lambda: precision_recall(gt, results["bbox"], iou=0.52))


# ---------------------------------------------------------------------------------
# Dataset classes against COCO categories
# ---------------------------------------------------------------------------------


def test_validate_categories_maps_indices_to_ids_by_sorted_id():
    categories = [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}]
    assert validate_categories(categories, ["person", "bicycle", "car"]) == [1, 2, 3]
    text = message(lambda: validate_categories(categories, ["person", "bike", "car"]))
    assert "class 1 is 'bike'" in text and "(id 2) is 'bicycle'" in text
    text = message(lambda: validate_categories(categories, ["person", "bicycle"]))
    assert "2 classes but the annotations define 3" in text
    assert "class 3 ('truck') has no category" in message(
        lambda: validate_categories(categories, ["person", "bicycle", "car", "truck"])
    )


# ---------------------------------------------------------------------------------
# cvtrain-score detection
# ---------------------------------------------------------------------------------


@EACH_BACKEND
def test_cli_json_equals_evaluate_coco_and_saves_the_pr_curve(generated, capsys, backend):
    tmp_path, gt, results = generated
    gt_path, results_path = write_coco(tmp_path, gt, results["segm"])
    png = tmp_path / "pr.png"
    args = ["detection", "--gt", str(gt_path), "--results", str(results_path), "--iou-type", "segm"]
    code, out, err = run_score_cli([*args, "--backend", backend, "--json", "--pr-curve", str(png)], capsys)
    assert code == 0, err
    assert json.loads(out) == pytest.approx(evaluate_coco(gt_path, results_path, "segm"), abs=1e-9)
    assert png.is_file() and png.stat().st_size > 0


def test_cli_table_names_all_twelve_stats(generated, capsys):
    tmp_path, gt, results = generated
    gt_path, results_path = write_coco(tmp_path, gt, results["bbox"])
    code, out, _ = run_score_cli(["detection", "--gt", str(gt_path), "--results", str(results_path)], capsys)
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == list(STAT_NAMES)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda gt, res: (gt, res + [{**res[0], "category_id": 91}]), "category id 91"),
        (lambda gt, res: (gt, []), "results list is empty"),
        (lambda gt, res: ("{", res), "not valid JSON"),
    ],
)
def test_cli_errors_are_one_line_with_exit_status_2(generated, capsys, change, expected):
    tmp_path, gt, results = generated
    gt, res = change(gt, results["bbox"])
    gt_path, results_path = write_coco(tmp_path, {}, res)
    gt_path.write_text(gt if isinstance(gt, str) else json.dumps(gt))
    code, out, err = run_score_cli(["detection", "--gt", str(gt_path), "--results", str(results_path)], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and expected in err and "Traceback" not in err


def test_cli_missing_file_is_one_line(tmp_path, capsys):
    code, _, err = run_score_cli(["detection", "--gt", str(tmp_path / "gt.json"), "--results", "r.json"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not found" in err


def test_detection_scoring_does_not_import_torch():
    code = (
        "import sys, cvtrain.score_cli, cvtrain.metrics.detection; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
