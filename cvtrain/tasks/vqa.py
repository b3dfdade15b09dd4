"""Visual question answering: pick one of the K most frequent answers for an image's question.

Training: soft targets min(#annotators who gave the answer / 3, 1) per answer class,
every question of a batch's images at once; task.loss=softmax (default) is the
cross-entropy of the softmax against those scores made a distribution, task.loss=bce the
sigmoid cross-entropy per class summed over classes (Teney et al. 2018), which learns
ShapesWorld's few answers more slowly. Evaluation: the top class of each question, scored
by the official VQA accuracy (cvtrain/metrics/vqa.py) over the ten answers as given,
overall (vqa_acc), per answer type (acc_yes_no, acc_number, acc_other) and per question
type (acc_q_<type>). mode=eval also writes the results and, for ShapesWorld, the
questions and annotations as VQA json files that `cvtrain-score vqa` scores to the same
numbers. mode=predict answers question="..." about each input= image.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cvtrain.engine.distributed import broadcast_object, env_from_os, gather_objects
from cvtrain.engine.task import Task
from cvtrain.errors import UserError
from cvtrain.registry import MODELS, TASKS
from cvtrain.tasks.figures import save_image_grid
from cvtrain.tasks.images import expand_inputs, load_image, normalize
from cvtrain.tasks.vqa_data import VQASplits, soft_targets


def metric_name(prefix: str, kind: str) -> str:
    """'acc_yes_no' for answer type 'yes/no': metric names stay plain identifiers."""
    return prefix + re.sub(r"[^0-9a-zA-Z]+", "_", kind).strip("_").lower()


@TASKS.register("vqa")
class VQATask(Task):
    name = "vqa"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.splits = VQASplits(cfg)
        self._eval_split = "val"
        if cfg.task.loss not in ("softmax", "bce"):
            raise UserError(f"task.loss={cfg.task.loss} is not a VQA loss; valid: softmax, bce.")

    # --- data and model -------------------------------------------------------
    def build_dataset(self, split: str):
        return self.splits.dataset(split)

    def build_models(self) -> dict[str, nn.Module]:
        builder = MODELS.get(self.cfg.model.name, families=tuple(self.cfg.task.families))
        model = builder(self.cfg.model, vocab_size=len(self.splits.vocabulary()),
                        num_answers=len(self.splits.answer_classes()))
        return {"model": model}

    @staticmethod
    def flatten(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's real questions: tokens (M, L) cut to the longest, their image (M,), answers
        (M, 10), ids (M,)."""
        real = batch["question_id"] >= 0
        owner = torch.arange(real.shape[0], device=real.device).unsqueeze(1).expand_as(real)[real]
        tokens = batch["tokens"][real]
        longest = int((tokens != 0).sum(dim=1).max()) if len(tokens) else 1
        return tokens[:, :longest], owner, batch["answers"][real], batch["question_id"][real]

    # --- training -------------------------------------------------------------
    def train_step(self, batch, step):
        tokens, owner, answers, _ = self.flatten(batch)
        logits = self.model(normalize(batch["image"]), tokens, owner).float()
        targets = soft_targets(answers, logits.shape[1])
        if self.cfg.task.loss == "bce":
            loss = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(tokens)
        else:  # softmax: cross-entropy against the soft scores made a distribution
            weights = targets / targets.sum(dim=1, keepdim=True).clamp(min=1e-6)
            loss = -(weights * logits.log_softmax(dim=1)).sum(dim=1).mean()
        step("main", loss)
        return {"loss": loss.detach()}

    # --- evaluation -----------------------------------------------------------
    def answer(self, images: torch.Tensor, tokens: torch.Tensor, owner: torch.Tensor) -> tuple[list[str], list[float]]:
        logits = self.model(normalize(images), tokens, owner).float()
        probs = logits.sigmoid() if self.cfg.task.loss == "bce" else logits.softmax(dim=1)
        best = probs.max(dim=1)
        classes = self.splits.answer_classes()
        return [classes[i] for i in best.indices.tolist()], best.values.tolist()

    def start_eval(self, split: str) -> None:
        self._eval_split = split
        self._predicted: dict[int, str] = {}
        self._shown: list[tuple[torch.Tensor, int, str]] = []

    def eval_step(self, batch) -> None:
        tokens, owner, _, qids = self.flatten(batch)
        if not len(qids):
            return
        answers, _ = self.answer(batch["image"], tokens, owner)
        self._predicted.update(zip(qids.tolist(), answers))
        if len(self._shown) < self.cfg.logger.max_images:
            # one question per image in the figure, of a kind that changes from image to image
            rows = {}
            for m, image in enumerate(owner.tolist()):
                rows.setdefault(image, []).append(m)
            for image, ms in rows.items():
                m = ms[(int(batch["index"][image]) + len(self._shown)) % len(ms)]
                self._shown.append((batch["image"][image].cpu(), int(qids[m]), answers[m]))

    def finish_eval(self) -> dict[str, float]:
        from cvtrain.metrics.vqa import VQAQuestion, score_vqa

        predicted: dict[int, str] = {}
        for part in gather_objects(self._predicted):
            predicted.update(part)
        scores = None
        if env_from_os().is_main:
            by_id = self._questions()
            questions = {q: VQAQuestion(by_id[q]["answers"], by_id[q]["question_type"], by_id[q]["answer_type"])
                         for q in by_id if q in predicted}
            result = score_vqa(questions, predicted)
            scores = {"vqa_acc": result.overall,
                      **{metric_name("acc_", k): v for k, v in sorted(result.per_answer_type.items())},
                      **{metric_name("acc_q_", k): v for k, v in sorted(result.per_question_type.items())}}
            if self.cfg.mode == "eval" and self.run_dir is not None:
                self._write_results(predicted)
        return broadcast_object(scores)

    def _questions(self) -> dict[int, dict]:
        return {int(q): v for q, v in self.splits.images(self._eval_split).by_id().items()}

    def _write_results(self, predicted: dict[int, str]) -> None:
        """vqa_results_<split>.json ([{question_id, answer}]) and, for data held in memory
        (ShapesWorld), the split's questions and annotations in VQA v2's layout."""
        split = self._eval_split
        (self.run_dir / f"vqa_results_{split}.json").write_text(
            json.dumps([{"question_id": q, "answer": a} for q, a in predicted.items()]))
        data = self.splits.images(split)
        if data.images is None:
            return
        questions, annotations = [], []
        for image_id, qs in zip(data.image_ids, data.questions):
            for q in qs:
                questions.append({"image_id": image_id, "question": q["question"], "question_id": q["question_id"]})
                majority = max(set(a["answer"] for a in q["answers"]), key=[a["answer"] for a in q["answers"]].count)
                annotations.append({"image_id": image_id, "question_id": q["question_id"],
                                    "question_type": q["question_type"], "answer_type": q["answer_type"],
                                    "multiple_choice_answer": majority, "answers": q["answers"]})
        meta = {"info": {"description": "ShapesWorld"}, "license": {}, "data_subtype": split}
        (self.run_dir / f"vqa_questions_{split}.json").write_text(
            json.dumps({**meta, "task_type": "Open-Ended", "data_type": "shapesworld", "questions": questions}))
        (self.run_dir / f"vqa_annotations_{split}.json").write_text(
            json.dumps({**meta, "data_type": "shapesworld", "annotations": annotations}))

    def save_outputs(self, out_dir: Path, tag: str) -> list[Path]:
        """images/vqa.png: each image with one question, the predicted and the ground-truth answer."""
        by_id = self._questions()
        items = []
        for image, qid, predicted in self._shown[: self.cfg.logger.max_images]:
            q = by_id[qid]
            answers = [a["answer"] for a in q["answers"]]
            truth = max(set(answers), key=answers.count)
            mark = "ok" if predicted == truth else "wrong"
            items.append((image, f"{q['question']}\npredicted: {predicted} ({mark})\nground truth: {truth}"))
        return [save_image_grid(items, out_dir / "vqa.png", cols=4, wrap=34)] if items else []

    # --- prediction -----------------------------------------------------------
    @torch.inference_mode()
    def predict(self, out_dir: Path) -> list[dict[str, Any]]:
        if not self.cfg.question:
            raise UserError('mode=predict: task=vqa needs a question about the input images; pass '
                            'question="what color is the large circle ?".')
        paths, size = expand_inputs(self.cfg.input), self.cfg.dataset.image_size
        tokens = self.splits.encode_questions([str(self.cfg.question)]).to(self.device)
        records, shown = [], []
        for start in range(0, len(paths), 64):
            chunk = paths[start : start + 64]
            images = torch.stack([load_image(p, size, 3) for p in chunk]).to(self.device)
            owner = torch.arange(len(chunk), device=self.device)
            answers, scores = self.answer(images, tokens.expand(len(chunk), -1), owner)
            for path, image, answer, score in zip(chunk, images, answers, scores):
                records.append({"input": str(path), "question": str(self.cfg.question), "prediction": answer,
                                "score": score})
                shown.append((image.cpu(), f"{self.cfg.question}\npredicted: {answer} ({score:.2f})"))
        if self.cfg.logger.images and shown:
            save_image_grid(shown[: self.cfg.logger.max_images], out_dir / "vqa.png", cols=4, wrap=34)
        return records

    # --- checkpoint state -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.splits.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.splits.load_state_dict(state)
