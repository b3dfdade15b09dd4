"""Benchmark COCO bbox evaluation: pycocotools against faster-coco-eval on a COCO-sized split.

    python scripts/bench_coco_eval.py [--images 5000] [--detections 100] [--seed 0]

Synthesizes, in memory, ground truth like COCO val2017 (about 7 boxes an image, the 80
COCO category ids, all three area ranges, a few crowd boxes) and detector-like results
(jittered copies of the true boxes, some with the wrong class, then false positives up to
`--detections` per image). Times the whole `evaluate_coco` call with each backend (input
checks included, as a user pays them) and checks that the 12 stats agree.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cvtrain.metrics.detection import STAT_NAMES, evaluate_coco

# COCO's 80 category ids: 1..90 without the 10 ids the 2014 release never used
COCO_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]
WIDTH, HEIGHT = 640, 480


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    """[x, y, w, h] boxes inside the image, sizes log-uniform so small, medium and large all occur."""
    w = np.exp(rng.uniform(np.log(4), np.log(WIDTH * 0.9), n))
    h = np.clip(w * np.exp(rng.normal(0, 0.4, n)), 2, HEIGHT * 0.95)
    x = rng.uniform(0, WIDTH - w)
    y = rng.uniform(0, HEIGHT - h)
    return np.stack([x, y, w, h], axis=1).round(2)


def synthesize(images: int, detections: int, seed: int) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    gt = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"class{c}"} for c in COCO_IDS]}
    results: list[dict] = []
    for image_id in range(1, images + 1):
        gt["images"].append({"id": image_id, "width": WIDTH, "height": HEIGHT})
        boxes = random_boxes(rng, int(rng.poisson(7)))
        cats = rng.choice(COCO_IDS, len(boxes))
        for box, cat in zip(boxes, cats):
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": int(cat),
                "bbox": box.tolist(), "area": float(box[2] * box[3]), "iscrowd": int(rng.random() < 0.01),
            })  # fmt: skip
        results.extend(_detections(rng, image_id, boxes, cats, detections))
    return gt, results


def _detections(rng, image_id: int, boxes: np.ndarray, cats: np.ndarray, total: int) -> list[dict]:
    """Up to 3 jittered hits per true box (10% with a wrong class), then false positives."""
    hits = np.repeat(boxes, 3, axis=0)[: total]
    hit_cats = np.repeat(cats, 3)[: total]
    scale = np.concatenate([hits[:, 2:], hits[:, 2:]], axis=1)
    hits = hits + rng.normal(0, 0.08, hits.shape) * scale
    hits[:, 2:] = np.maximum(hits[:, 2:], 1)
    wrong = rng.random(len(hits)) < 0.1
    hit_cats = np.where(wrong, rng.choice(COCO_IDS, len(hits)), hit_cats)
    misses = random_boxes(rng, total - len(hits))
    all_boxes = np.concatenate([hits, misses]).round(2)
    all_cats = np.concatenate([hit_cats, rng.choice(COCO_IDS, len(misses))])
    scores = np.concatenate([rng.uniform(0.3, 1.0, len(hits)), rng.uniform(0.0, 0.6, len(misses))]).round(4)
    return [
        {"image_id": image_id, "category_id": int(c), "bbox": b.tolist(), "score": float(s)}
        for b, c, s in zip(all_boxes, all_cats, scores)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=100, help="detections per image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    gt, results = synthesize(args.images, args.detections, args.seed)
    print(
        f"synthesized {len(gt['images'])} images, {len(gt['annotations'])} boxes, {len(results)} detections "
        f"in {time.perf_counter() - start:.1f} s"
    )
    times, stats = {}, {}
    for backend in ("pycocotools", "faster_coco_eval"):
        start = time.perf_counter()
        stats[backend] = evaluate_coco(gt, results, "bbox", backend)
        times[backend] = time.perf_counter() - start
        print(f"{backend:17s} {times[backend]:8.2f} s   mAP {stats[backend]['map']:.6f}", flush=True)
    print(f"speed-up: faster_coco_eval is {times['pycocotools'] / times['faster_coco_eval']:.1f}x faster")

    diff = {k: abs(stats["pycocotools"][k] - stats["faster_coco_eval"][k]) for k in STAT_NAMES}
    worst = max(diff, key=diff.get)
    print(f"largest stat difference: {diff[worst]:.2e} ({worst})")
    ours, theirs = stats["pycocotools"][worst], stats["faster_coco_eval"][worst]
    assert diff[worst] <= 1e-9, f"backends disagree on {worst}: {ours} vs {theirs}"
    for key in STAT_NAMES:
        print(f"  {key:11s} {stats['pycocotools'][key]:.6f}")


if __name__ == "__main__":
    main()
