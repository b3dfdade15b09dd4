"""Situation recognition (imSitu): name the activity of an image and who or what fills each role.

Training: cross-entropy of the verb, plus task.noun_weight x the mean cross-entropy of
each role's noun given the ground-truth verb, against each of the three annotators'
frames. Evaluation ranks the verbs, predicts a frame for each of the top task.top_verbs
and for the ground-truth verb (the official scorer reads the prediction's frame for that
verb, as the imSitu CRF gives one for every verb), and scores them with the official
definitions (cvtrain/metrics/situation.py): top1_/top5_ verb, value, value_all,
gt_value, gt_value_all and their mean. mode=eval also writes the results and, for
ShapesWorld, the ground truth as imSitu json, which `cvtrain-score situation` scores to
the same numbers. mode=predict lists the top verbs of each input= image with their frames.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cvtrain.engine.distributed import broadcast_object, env_from_os, gather_objects
from cvtrain.engine.task import Task
from cvtrain.models.classifiers import unwrap
from cvtrain.registry import MODELS, TASKS
from cvtrain.tasks.figures import save_image_grid
from cvtrain.tasks.images import expand_inputs, load_image, normalize
from cvtrain.tasks.situation_data import SituationSplits


@TASKS.register("situation")
class SituationTask(Task):
    name = "situation"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.splits = SituationSplits(cfg)
        self._eval_split = "val"
        self._roles: torch.Tensor | None = None

    # --- data and model -------------------------------------------------------
    def build_dataset(self, split: str):
        return self.splits.dataset(split)

    def build_models(self) -> dict[str, nn.Module]:
        builder = MODELS.get(self.cfg.model.name, families=tuple(self.cfg.task.families))
        model = builder(self.cfg.model, num_verbs=len(self.splits.verbs), num_roles=len(self.splits.roles),
                        num_nouns=len(self.splits.nouns))
        return {"model": model}

    def role_table(self) -> torch.Tensor:
        if self._roles is None or self._roles.device != self.device:
            self._roles = self.splits.role_table().to(self.device)
        return self._roles

    # --- training -------------------------------------------------------------
    def train_step(self, batch, step):
        verbs = batch["verb"]
        verb_logits, noun_logits = self.model(normalize(batch["image"]), verbs[:, None], self.role_table()[verbs][:, None])
        verb_loss = nn.functional.cross_entropy(verb_logits.float(), verbs)
        nouns = batch["nouns"]  # (B, F, R)
        logits = noun_logits[:, 0].float()[:, None].expand(-1, nouns.shape[1], -1, -1)  # (B, F, R, N)
        noun_loss = nn.functional.cross_entropy(logits.flatten(0, 2), nouns.flatten(), ignore_index=-1)
        loss = verb_loss + self.cfg.task.noun_weight * noun_loss
        step("main", loss)
        return {"loss": loss.detach(), "verb_loss": verb_loss.detach(), "noun_loss": noun_loss.detach()}

    # --- evaluation -----------------------------------------------------------
    @torch.no_grad()
    def rank(self, images: torch.Tensor, extra: torch.Tensor | None = None) -> list[list[dict]]:
        """Per image, its top task.top_verbs verbs, best first, each with a frame
        {role: noun}; then the verb `extra[i]` with its frame when it is not among them."""
        model, table = unwrap(self.model), self.role_table()
        features = model.features(normalize(images))
        probs = model.verbs(features).float().softmax(dim=1)
        k = min(self.cfg.task.top_verbs, probs.shape[1])
        top = probs.topk(k, dim=1)
        candidates = top.indices if extra is None else torch.cat([top.indices, extra[:, None]], dim=1)
        nouns = model.nouns(features, candidates, table[candidates]).argmax(dim=-1).tolist()  # (B, K, R)
        verbs, names = self.splits.verbs, self.splits.nouns
        out = []
        for i, row in enumerate(candidates.tolist()):
            ranked = []
            for j, v in enumerate(row):
                if j == k and v in row[:k]:
                    break
                roles = self.splits.verb_roles(verbs[v])
                ranked.append({"verb": verbs[v], "score": float(probs[i, v]),
                               "frame": {r: names[n] for r, n in zip(roles, nouns[i][j])}})
            out.append(ranked)
        return out

    def start_eval(self, split: str) -> None:
        self._eval_split = split
        self._predicted: dict[str, list[dict]] = {}
        self._shown: list[tuple[torch.Tensor, str]] = []

    def eval_step(self, batch) -> None:
        ids = self.splits.images(self._eval_split).image_ids
        ranked = self.rank(batch["image"], batch["verb"])
        for index, entries in zip(batch["index"].tolist(), ranked):
            self._predicted[ids[index]] = entries
        if len(self._shown) < self.cfg.logger.max_images:
            self._shown.extend((image.cpu(), ids[i]) for image, i in zip(batch["image"], batch["index"].tolist()))

    def finish_eval(self) -> dict[str, float]:
        from cvtrain.metrics.situation import score_situations

        predicted: dict[str, list[dict]] = {}
        for part in gather_objects(self._predicted):
            predicted.update(part)
        scores = None
        if env_from_os().is_main:
            gt = self.splits.images(self._eval_split).ground_truth()
            scores = score_situations({i: gt[i] for i in gt if i in predicted}, predicted)
            if self.cfg.mode == "eval" and self.run_dir is not None:
                self._write_results(predicted, gt)
        return broadcast_object(scores)

    def _write_results(self, predicted: dict[str, list[dict]], gt: dict) -> None:
        """situation_results_<split>.json and, for data held in memory (ShapesWorld), the
        ground truth as imSitu json (situation_gt_<split>.json)."""
        split = self._eval_split
        results = {i: [{"verb": e["verb"], "frame": e["frame"]} for e in entries] for i, entries in predicted.items()}
        (self.run_dir / f"situation_results_{split}.json").write_text(json.dumps(results))
        if self.splits.images(split).images is not None:
            truth = {i: {"verb": s.verb, "frames": s.frames} for i, s in gt.items()}
            (self.run_dir / f"situation_gt_{split}.json").write_text(json.dumps(truth))

    def save_outputs(self, out_dir: Path, tag: str) -> list[Path]:
        """images/situations.png: each image with its predicted frame as role -> noun and the true verb."""
        gt = self.splits.images(self._eval_split).ground_truth()
        items = []
        for image, image_id in self._shown[: self.cfg.logger.max_images]:
            best, truth = self._predicted[image_id][0], gt[image_id]
            mark = "ok" if best["verb"] == truth.verb else f"true: {truth.verb}"
            items.append((image, frame_table(best, mark)))
        return [save_image_grid(items, out_dir / "situations.png", cols=4, wrap=40)] if items else []

    # --- prediction -----------------------------------------------------------
    @torch.inference_mode()
    def predict(self, out_dir: Path) -> list[dict[str, Any]]:
        paths, size = expand_inputs(self.cfg.input), self.cfg.dataset.image_size
        records, shown = [], []
        for start in range(0, len(paths), 64):
            chunk = paths[start : start + 64]
            images = torch.stack([load_image(p, size, 3) for p in chunk]).to(self.device)
            for path, image, ranked in zip(chunk, images, self.rank(images)):
                best = ranked[0]
                frame = ", ".join(f"{r}={n or '-'}" for r, n in best["frame"].items())
                records.append({"input": str(path), "prediction": f"{best['verb']}: {frame}", "score": best["score"],
                                "top": ranked})
                shown.append((image.cpu(), frame_table(best, f"{best['score']:.2f}")))
        if self.cfg.logger.images and shown:
            save_image_grid(shown[: self.cfg.logger.max_images], out_dir / "situations.png", cols=4, wrap=40)
        return records

    # --- checkpoint state -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.splits.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.splits.load_state_dict(state)
        self._roles = None


def frame_table(entry: dict, note: str) -> str:
    """'VERB (note)' then one 'role -> noun' line per role ('-' for the empty noun)."""
    lines = [f"{entry['verb']} ({note})"] + [f"{role:>8s} -> {noun or '-'}" for role, noun in entry["frame"].items()]
    return "\n".join(lines)
