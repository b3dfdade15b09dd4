"""imSitu situation scores exactly as the official evaluation computes them (no torch).

Reproduces `imSituTensorEvaluation` of my89/imSitu (imsitu.py; used by baseline_crf.py's
eval_model with top-k 1 and 5 and three references), on verb and noun strings instead
of the encoder's integer ids:

- verb@k: the ground-truth verb is among the first k predicted verbs;
- the frame scored is the prediction's frame *for the ground-truth verb* (the CRF
  predicts one frame per verb); each role of that verb is matched if its predicted noun
  equals the noun of the same role in any of the (three) reference frames;
- value@k: matched roles, counted only when verb@k holds; value-all@k: every role
  matched, again only with verb@k; value* and value-all* ("ground-truth verb"): the
  same without the verb condition (identical for every k);
- averaging is per verb first (each verb's images: verb and value-all over its images,
  value over its roles), then the mean over the verbs that occur in the ground truth;
- `mean` is baseline_crf's summary: the mean of top-1 verb, value, value-all, top-5
  verb, value, value-all, value* and value-all*.

Scores are fractions, as get_average_results returns them (the official prints them x100).
One difference by construction: the official encoder turns a reference noun never seen
with that verb and role in training into an "unknown" id that no prediction matches;
here nouns are compared as strings. A model that predicts only nouns it was trained
on (all of cvtrain's) gets the same scores either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TOPK = (1, 5)
KEYS = ("top1_verb", "top1_value", "top1_value_all", "top5_verb", "top5_value", "top5_value_all",
        "gt_value", "gt_value_all", "mean")
LABELS = {
    "top1_verb": "top-1 verb", "top1_value": "top-1 value", "top1_value_all": "top-1 value-all",
    "top5_verb": "top-5 verb", "top5_value": "top-5 value", "top5_value_all": "top-5 value-all",
    "gt_value": "ground-truth verb value", "gt_value_all": "ground-truth verb value-all", "mean": "mean",
}


@dataclass
class Situation:
    """A ground-truth situation: its verb and the annotators' frames (role -> noun)."""

    verb: str
    frames: list[dict[str, str]]


@dataclass
class _Card:
    """imSitu's score card of one verb."""

    n_image: int = 0
    n_value: int = 0
    verb: dict[int, int] = None  # per k
    value: dict[int, int] = None
    value_all: dict[int, int] = None
    value_star: int = 0
    value_all_star: int = 0

    def __post_init__(self):
        self.verb, self.value, self.value_all = ({k: 0 for k in TOPK} for _ in range(3))


def score_situations(gt: Mapping[Any, Situation], predictions: Mapping[Any, Sequence[Mapping[str, Any]]]
                     ) -> dict[str, float]:
    """Scores of ranked predictions (image -> [{"verb", "frame": {role: noun}}, ...], best
    first; at least the top 5, plus any verb's frame beyond them) against every image of
    `gt`. The frame of the ground-truth verb, wherever it is in the list, is what the
    role scores read; an image whose list lacks it matches no role."""
    cards: dict[str, _Card] = {}
    for image, situation in gt.items():
        ranked = predictions[image]
        verbs = [p["verb"] for p in ranked]
        roles = list(situation.frames[0])  # the official reads the roles off the first reference
        card = cards.setdefault(situation.verb, _Card())
        card.n_image += 1
        card.n_value += len(roles)
        found_at = {k: situation.verb in verbs[:k] for k in TOPK}
        for k in TOPK:
            card.verb[k] += found_at[k]
        frame = next((p["frame"] for p in ranked if p["verb"] == situation.verb), None)
        matched = [frame is not None and any(frame.get(role) == ref.get(role) for ref in situation.frames)
                   for role in roles]
        all_found = all(matched)
        for k in TOPK:
            card.value[k] += sum(matched) if found_at[k] else 0
            card.value_all[k] += all_found and found_at[k]
        card.value_star += sum(matched)
        card.value_all_star += all_found
    if not cards:
        raise ValueError("no image to score")
    return _average(cards)


def _average(cards: dict[str, _Card]) -> dict[str, float]:
    """get_average_results: per-verb rates, then their mean over verbs."""
    n = len(cards)
    out: dict[str, float] = {}
    for k in TOPK:
        out[f"top{k}_verb"] = sum(c.verb[k] / c.n_image for c in cards.values()) / n
        out[f"top{k}_value"] = sum(c.value[k] / c.n_value for c in cards.values()) / n
        out[f"top{k}_value_all"] = sum(c.value_all[k] / c.n_image for c in cards.values()) / n
    out["gt_value"] = sum(c.value_star / c.n_value for c in cards.values()) / n
    out["gt_value_all"] = sum(c.value_all_star / c.n_image for c in cards.values()) / n
    summary = [out[f"top{k}_{m}"] for k in TOPK for m in ("verb", "value", "value_all")]
    out["mean"] = (sum(summary) + out["gt_value"] + out["gt_value_all"]) / 8
    return {key: out[key] for key in KEYS}


# --- files (the cvtrain-score situation command and the imSitu data set) -------------


def parse_situations(data: Any, where: str) -> dict[str, Situation]:
    """imSitu's train/dev/test json ({image: {"verb", "frames": [{role: noun}, ...]}}) as
    Situations; every frame of an image must name the same roles (the official scorer
    compares roles by position)."""
    from cvtrain.errors import UserError

    if not isinstance(data, dict):
        raise UserError(f"{where} is not an imSitu json: it must map image names to {{verb, frames}}.")
    out = {}
    for image, ann in data.items():
        try:
            verb, frames = ann["verb"], [dict(f) for f in ann["frames"]]
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{where}: image '{image}' needs a verb and frames [{{role: noun}}, ...].") from None
        if not frames or not isinstance(verb, str):
            raise UserError(f"{where}: image '{image}' has no frame (or a verb that is not a string).")
        roles = set(frames[0])
        for i, frame in enumerate(frames[1:], 1):
            if set(frame) != roles:
                raise UserError(f"{where}: image '{image}' frame {i} has roles {sorted(frame)} but frame 0 has "
                                f"{sorted(roles)}; every frame of an image names the same roles.")
        if any(not isinstance(n, str) for f in frames for n in f.values()):
            raise UserError(f"{where}: image '{image}' has a noun that is not a string (use \"\" for an empty role).")
        out[str(image)] = Situation(verb, frames)
    return out


def parse_results(data: Any, gt: Mapping[str, Situation], where: str) -> tuple[dict[str, list[dict]], int]:
    """A results json ({image: [{"verb", "frame": {role: noun}}, ...]}, best verb first)
    checked against `gt`: every ground-truth image answered, no unknown image, no verb
    twice in a list (top-k reads the first k: a shorter list has fewer chances), and the
    ground-truth verb's frame, when listed, naming a noun for each of its roles. Also
    returns how many images lack a frame for their ground-truth verb."""
    from cvtrain.errors import UserError

    if not isinstance(data, dict):
        raise UserError(f"{where} must map image names to ranked lists of {{verb, frame}}.")
    out: dict[str, list[dict]] = {}
    without_gt_frame = 0
    for image, ranked in data.items():
        if image not in gt:
            raise UserError(f"{where}: image '{image}' is not in the ground truth; results must cover exactly "
                            "its images.")
        if not isinstance(ranked, list) or not ranked:
            raise UserError(f"{where}: image '{image}' needs a non-empty list of {{verb, frame}}, best first.")
        entries = []
        for i, entry in enumerate(ranked):
            if (not isinstance(entry, dict) or not isinstance(entry.get("verb"), str)
                    or not isinstance(entry.get("frame"), dict)):
                raise UserError(f"{where}: image '{image}' entry {i} needs a verb and a frame {{role: noun}}.")
            entries.append({"verb": entry["verb"], "frame": dict(entry["frame"])})
        verbs = [e["verb"] for e in entries]
        if len(set(verbs)) < len(verbs):
            twice = next(v for v in verbs if verbs.count(v) > 1)
            raise UserError(f"{where}: image '{image}' lists verb '{twice}' twice; rank each verb once.")
        truth = gt[image]
        frame = next((e["frame"] for e in entries if e["verb"] == truth.verb), None)
        if frame is None:
            without_gt_frame += 1
        else:
            missing = [r for r in truth.frames[0] if r not in frame]
            if missing:
                raise UserError(f"{where}: image '{image}', verb '{truth.verb}': the frame has no noun for role "
                                f"'{missing[0]}'; give a noun (\"\" for empty) for every role of the verb.")
        out[image] = entries
    unanswered = [image for image in gt if image not in out]
    if unanswered:
        raise UserError(f"{where} has no prediction for {len(unanswered)} ground-truth image(s), e.g. "
                        f"'{unanswered[0]}'; results must cover every image.")
    return out, without_gt_frame


def load_situation_files(gt_path: str, results_path: str) -> tuple[dict[str, Situation], dict[str, list[dict]], int]:
    from cvtrain.metrics.jsonfiles import read_json

    gt = parse_situations(read_json(gt_path, "ground truth", "--gt", kind="imSitu json (dev.json, test.json)"),
                          f"ground truth '{gt_path}'")
    results, without = parse_results(read_json(results_path, "results", "--results", kind="situation results json"),
                                     gt, f"results '{results_path}'")
    return gt, results, without
