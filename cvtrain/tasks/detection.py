"""Detection and instance segmentation: boxes (and masks) from torchvision detectors, scored by COCOeval.

The data sets give uint8 images at their own size with boxes in pixels; the detectors
resize inside (their GeneralizedRCNNTransform) and map predictions back, so every
prediction is already in the annotations' coordinates. Training sums the detector's
own loss dict. Evaluation turns predictions into COCO results (xywh boxes, category
ids, RLE masks), gathers them from every rank, and rank 0 scores them with COCOeval
against the split's COCO ground truth, writes them to `detections/<split>.json` in the
run folder, and shares the 12 stats. Instance segmentation reports the box stats
(map, map50, ...) and the mask stats (segm_map, segm_map50, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cvtrain.engine.distributed import broadcast_object, env_from_os, gather_objects
from cvtrain.engine.task import Task
from cvtrain.errors import UserError
from cvtrain.registry import DATASETS, MODELS, TASKS
from cvtrain.tasks.detection_results import draw_detections, to_coco_results
from cvtrain.tasks.figures import save_image_grid
from cvtrain.tasks.images import expand_inputs, load_image


@TASKS.register("detection")
class DetectionTask(Task):
    name = "detection"
    iou_types: tuple[str, ...] = ("bbox",)

    def __init__(self, cfg):
        super().__init__(cfg)
        _check_backend(cfg.task.coco_backend)
        self._datasets: dict[str, Any] = {}
        self._meta: dict[str, list] = {}  # class names and category ids: from the data, or a checkpoint
        self._split = "val"

    @property
    def with_masks(self) -> bool:
        return "segm" in self.iou_types

    # --- data -----------------------------------------------------------------
    def build_dataset(self, split: str):
        if split not in self._datasets:
            builder = DATASETS.get(self.cfg.dataset.name, families=(self.name,))
            data = builder(self.cfg.dataset, split)
            self._check_classes(data, split)
            self._datasets[split] = data
        return self._datasets[split]

    def _check_classes(self, data, split: str) -> None:
        """A model trained on other classes would score every box against the wrong
        category, so the data's classes must be the ones the model was built for."""
        names, ids = list(data.class_names), list(data.category_ids)
        if not self._meta:
            self._meta = {"class_names": names, "category_ids": ids}
            return
        trained = list(zip(self._meta["class_names"], self._meta["category_ids"]))
        problem = _first_difference(trained, list(zip(names, ids)))
        if problem:
            raise UserError(f"{problem} in the {split} data; evaluate on the data set the model was trained on.")

    def collate(self):
        from cvtrain.data.detection import collate_detection

        return collate_detection

    @property
    def class_names(self) -> list[str]:
        if not self._meta:
            self.build_dataset("train")
        return self._meta["class_names"]

    @property
    def category_ids(self) -> list[int]:
        self.class_names  # noqa: B018  (fills the metadata)
        return self._meta["category_ids"]

    # --- model ----------------------------------------------------------------
    def build_models(self):
        builder = MODELS.get(self.cfg.model.name, families=tuple(self.cfg.task.families))
        return {"model": builder(self.cfg.model, num_classes=len(self.class_names) + 1)}

    # --- training -------------------------------------------------------------
    def train_step(self, batch, step):
        images = [image.float().div(255) for image in batch["images"]]
        targets = batch["targets"]
        if self.cfg.task.augment:
            images, targets = _random_hflip(images, targets)
        losses = self.model(images, targets)
        total = sum(loss.float() for loss in losses.values())
        step("main", total)
        return {"loss": total.detach(), **{k: v.detach() for k, v in losses.items()}}

    # --- evaluation -----------------------------------------------------------
    def start_eval(self, split: str) -> None:
        self._split = split
        self._results: list[dict] = []
        self._image_ids: list[int] = []
        self._shown: list[tuple[torch.Tensor, dict]] = []
        self._evaluations: dict[str, Any] = {}

    def eval_step(self, batch) -> None:
        outputs = self.model([image.float().div(255) for image in batch["images"]])
        ids = batch["index"].tolist()
        outputs = [_on_cpu(out) for out in outputs]
        self._results.extend(to_coco_results(outputs, ids, self.category_ids, self.with_masks))
        self._image_ids.extend(ids)
        room = self.cfg.logger.max_images - len(self._shown)
        if room > 0:
            self._shown.extend(zip((image.cpu() for image in batch["images"][:room]), outputs[:room]))

    def finish_eval(self) -> dict[str, float]:
        parts = gather_objects((self._results, self._image_ids))
        stats = None
        if env_from_os().is_main:
            results = [r for part, _ in parts for r in part]
            image_ids = sorted(i for _, ids in parts for i in ids)
            stats = self._score(results, image_ids)
        return broadcast_object(stats)

    def _score(self, results: list[dict], image_ids: list[int]) -> dict[str, float]:
        """COCOeval per iou type on rank 0; the results are saved where a run's files go."""
        from cvtrain.metrics.detection import STAT_NAMES, coco_evaluation

        gt = self.build_dataset(self._split).coco_ground_truth()
        stats: dict[str, float] = {}
        for iou_type in self.iou_types:
            prefix = "" if iou_type == "bbox" else f"{iou_type}_"
            typed = _for_iou_type(results, iou_type)
            self._save_results(typed, iou_type)
            if not typed:  # nothing scored above model.score_thresh: COCOeval refuses an empty list
                stats.update({f"{prefix}{name}": 0.0 for name in STAT_NAMES})
                continue
            evaluation = coco_evaluation(gt, typed, iou_type, self.cfg.task.coco_backend, image_ids)
            self._evaluations[iou_type] = evaluation
            stats.update({f"{prefix}{name}": value for name, value in evaluation.stats.items()})
        return stats

    def _save_results(self, results: list[dict], iou_type: str) -> None:
        if self.run_dir is None:
            return
        suffix = "" if iou_type == "bbox" else f"_{iou_type}"
        path = self.run_dir / "detections" / f"{self._split}{suffix}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results))

    def save_outputs(self, out_dir: Path, tag: str) -> list[Path]:
        from cvtrain.metrics.detection import save_pr_curve

        threshold = self.cfg.task.score_threshold
        items = [draw_detections(image, out, self.class_names, threshold) for image, out in self._shown]
        paths = [save_image_grid(items, out_dir / "detections.png", cols=4)] if items else []
        for iou_type, evaluation in self._evaluations.items():
            recall, precision = evaluation.pr_curve(0.5)
            name = "pr_curve.png" if iou_type == "bbox" else f"pr_curve_{iou_type}.png"
            title = f"{tag}: {iou_type} precision-recall at IoU 0.5"
            paths.append(save_pr_curve(recall, precision, out_dir / name, label=f"{iou_type} IoU 0.5", title=title))
        return paths

    # --- prediction -----------------------------------------------------------
    @torch.inference_mode()
    def predict(self, out_dir: Path) -> list[dict[str, Any]]:
        threshold, records, shown = self.cfg.task.score_threshold, [], []
        for path in expand_inputs(self.cfg.input):
            image = load_image(path, None, 3)
            out = _on_cpu(self.model([image.to(self.device).float().div(255)])[0])
            keep = out["scores"] >= threshold
            found = [
                {"box": [round(c, 2) for c in box], "label": self.class_names[label - 1], "score": round(score, 4)}
                for box, label, score in zip(out["boxes"][keep].tolist(), out["labels"][keep].tolist(),
                                             out["scores"][keep].tolist())
            ]
            text = ", ".join(f"{d['label']} {d['score']:.2f}" for d in found) or f"nothing above {threshold}"
            records.append({"input": str(path), "prediction": text, "detections": found})
            shown.append(draw_detections(image, out, self.class_names, threshold))
        if self.cfg.logger.images and shown:
            save_image_grid(shown[: self.cfg.logger.max_images], out_dir / "detections.png", cols=4)
        return records

    # --- checkpoint state -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"class_names": self.class_names, "category_ids": self.category_ids}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self._meta = {"class_names": list(state["class_names"]), "category_ids": list(state["category_ids"])}


@TASKS.register("instance_segmentation")
class InstanceSegmentationTask(DetectionTask):
    """Detection plus a mask per box: the same loop, scored for boxes and for masks."""

    name = "instance_segmentation"
    iou_types = ("bbox", "segm")


# --- helpers -------------------------------------------------------------------------


def _first_difference(trained: list[tuple], data: list[tuple]) -> str | None:
    """Where the model's (class name, category id) list and the data's first differ: one
    line, even for COCO's 80 classes; None when they agree."""
    if trained == data:
        return None
    i = next((i for i, (a, b) in enumerate(zip(trained, data)) if a != b), min(len(trained), len(data)))

    def show(pairs: list[tuple]) -> str:
        return f"'{pairs[i][0]}' (id {pairs[i][1]})" if i < len(pairs) else "missing"

    return f"class {i} is {show(trained)} in the model ({len(trained)} classes) but {show(data)} ({len(data)})"


def _check_backend(name: str) -> None:
    """A misspelt or missing COCOeval backend fails now, not after the training it would score."""
    import importlib.util

    from cvtrain.errors import unknown_choice
    from cvtrain.metrics.detection import BACKENDS

    if name not in BACKENDS:
        raise unknown_choice("task.coco_backend", name, BACKENDS)
    if importlib.util.find_spec(name) is None:
        raise UserError(f"task.coco_backend={name} is not installed; pip install {name.replace('_', '-')} "
                        "or use task.coco_backend=pycocotools.")


def _random_hflip(images: list[torch.Tensor], targets: list[dict]) -> tuple[list, list]:
    """Flip a random half of the images left-right, with their boxes (and masks)."""
    flips = (torch.rand(len(images)) < 0.5).tolist()
    out_images, out_targets = [], []
    for image, target, flip in zip(images, targets, flips):
        if flip:
            width = image.shape[-1]
            target = dict(target)
            boxes = target["boxes"].clone()
            boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
            target["boxes"] = boxes
            if "masks" in target:
                target["masks"] = target["masks"].flip(-1)
            image = image.flip(-1)
        out_images.append(image)
        out_targets.append(target)
    return out_images, out_targets


def _for_iou_type(results: list[dict], iou_type: str) -> list[dict]:
    """The results one COCOeval run takes: boxes for bbox, masks only for segm (so that
    loadRes takes each detection's area from its mask, as COCO scores masks)."""
    if iou_type == "bbox":
        return [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    return [{k: v for k, v in r.items() if k != "bbox"} for r in results]


def _on_cpu(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One image's predictions on the CPU, floats as fp32 (autocast may give bf16), without
    background boxes: sigmoid heads (RetinaNet, FCOS) score label 0 like any class, but it
    is no category."""
    keep = out["labels"] > 0
    return {k: (v.float() if v.is_floating_point() else v)[keep].cpu() for k, v in out.items()}

