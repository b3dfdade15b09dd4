"""Images with questions and ten answers each: ShapesWorld's, or the VQA v2 json layout.

A builder (DATASETS family "vqa") returns `VQAImages`: per image, its questions with
their raw answer dicts, question type and answer type, exactly what the official scorer
reads; the images in memory (ShapesWorld) or as files (VQA v2). Questions are grouped
by image so a training step runs the CNN once per image, however many questions it has.

VQA v2 layout (visualqa.org): a questions json {data_subtype, questions: [{question_id,
image_id, question}]}, an annotations json {annotations: [{question_id, image_id,
question_type, answer_type, answers: [{answer, answer_confidence, answer_id}]}]} and an
image folder of COCO_<data_subtype>_<image_id:012d>.jpg.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cvtrain.data.image_files import first_missing, verify_images, wants_verify
from cvtrain.errors import UserError
from cvtrain.registry import DATASETS


@dataclass
class VQAImages:
    questions: list[list[dict]]  # per image: {question_id, question, answers (dicts), question_type, answer_type}
    image_ids: list[Any]
    images: torch.Tensor | None = None  # uint8 (N, 3, H, W), when held in memory
    paths: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.questions)

    def by_id(self) -> dict[Any, dict]:
        """Every question by its id, in image order."""
        return {q["question_id"]: q for qs in self.questions for q in qs}


@DATASETS.register("shapes", family="vqa")
def shapes_vqa(cfg, split: str) -> VQAImages:
    """ShapesWorld's questions (count, color, exists, shape, relation), ten answers each;
    question id = 10 * image index + position; answer types as VQA v2's."""
    from cvtrain.data.shapes import load
    from cvtrain.metrics.vqa import answer_type_of

    data = load(cfg, split)
    questions = [[{"question_id": 10 * i + j, "question": q["question"], "question_type": q["type"],
                   "answer_type": answer_type_of(q["answer"]),
                   "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                               for k, a in enumerate(q["answers"])]}
                  for j, q in enumerate(qs)] for i, qs in enumerate(data.questions)]
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous()
    return VQAImages(questions, list(range(len(data))), images=images)


def _fill(template: str, cfg, split: str) -> str:
    return str(template).format(root=cfg.root or "", split=cfg.splits.get(split, split))


@DATASETS.register("vqa", family="vqa")
def vqa_json(cfg, split: str) -> VQAImages:
    """The VQA v2 layout: dataset.questions and dataset.annotations ("{root}" and "{split}"
    filled in, split through dataset.splits), images under dataset.image_dir named by
    dataset.image_pattern."""
    from cvtrain.metrics.jsonfiles import read_json

    if split not in cfg.splits:
        raise UserError(f"unknown split '{split}'; dataset.splits maps {', '.join(cfg.splits)} to VQA file names.")
    qpath, apath = Path(_fill(cfg.questions, cfg, split)).expanduser(), Path(_fill(cfg.annotations, cfg, split)).expanduser()
    qdata = read_json(qpath, "dataset.questions", kind="VQA questions json (v2_OpenEnded_mscoco_*_questions.json)")
    adata = read_json(apath, "dataset.annotations", kind="VQA annotations json (v2_mscoco_*_annotations.json)")
    asked = _read_questions(qdata, qpath)
    subtype = str(qdata.get("data_subtype", cfg.splits.get(split, split)))
    by_image: dict[Any, list[dict]] = {}
    for i, ann in enumerate(adata.get("annotations", []) if isinstance(adata, dict) else []):
        try:
            qid, answers = ann["question_id"], [dict(a) for a in ann["answers"]]
            entry = {"question_id": qid, "question_type": str(ann["question_type"]),
                     "answer_type": str(ann["answer_type"]), "answers": answers}
            if len(answers) == 0 or not all(isinstance(a["answer"], str) for a in answers):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise UserError(f"dataset.annotations: entry {i} of '{apath}' needs question_id, question_type, "
                            "answer_type and answers[answer].") from None
        if qid not in asked:
            raise UserError(f"dataset.annotations: question_id {qid} (entry {i} of '{apath}') is not in the "
                            f"questions file '{qpath}'.")
        image_id, entry["question"] = asked[qid]
        by_image.setdefault(image_id, []).append(entry)
    if not by_image:
        raise UserError(f"dataset.annotations: '{apath}' has no annotations list (or it is empty).")
    folder = Path(_fill(cfg.image_dir, cfg, split)).expanduser()
    ids = list(by_image)
    paths = [folder / str(cfg.image_pattern).format(data_subtype=subtype, image_id=i) for i in ids]
    missing = first_missing(paths)
    if missing:
        raise UserError(f"dataset.image_dir: image '{missing}' of the VQA annotations is missing; point "
                        "dataset.image_dir (and dataset.image_pattern) at the COCO images of that split.")
    if wants_verify(cfg):
        verify_images(paths)
    return VQAImages([by_image[i] for i in ids], ids, paths=paths)


def _read_questions(data: Any, path: Path) -> dict[Any, tuple[Any, str]]:
    try:
        return {q["question_id"]: (q["image_id"], str(q["question"])) for q in data["questions"]}
    except (KeyError, TypeError):
        raise UserError(f"dataset.questions: '{path}' needs questions[question_id, image_id, question].") from None
