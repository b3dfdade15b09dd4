"""imSitu scores against the official evaluation's definition (my89/imSitu imsitu.py).

`official_scores` transcribes imSituTensorEvaluation.add_point / get_average_results on
the official integer encoding (verb id, then (role id, noun id) pairs per reference in
role-id order, padded with -1; a prediction tensor of one frame per verb; verbs sorted
by score), independently of cvtrain/metrics/situation.py, which compares strings.
"""

from __future__ import annotations

import json
import random

import pytest
from conftest import run_score_cli

from cvtrain.metrics.situation import KEYS, Situation, load_situation_files, parse_results, score_situations

# --- an independent transcription on the integer encoding -------------------------------------


class Encoder:
    """imSituVerbRoleNounEncoder's ids: verbs, roles and nouns numbered as first seen;
    each verb's roles sorted by role id."""

    def __init__(self, dataset: dict):
        self.v_id, self.r_id, self.n_id, self.v_r = {}, {}, {}, {}
        for ann in dataset.values():
            vid = self.v_id.setdefault(ann["verb"], len(self.v_id))
            self.v_r.setdefault(vid, [])
            for frame in ann["frames"]:
                for r, n in frame.items():
                    rid = self.r_id.setdefault(r, len(self.r_id))
                    self.n_id.setdefault(n, len(self.n_id))
                    if rid not in self.v_r[vid]:
                        self.v_r[vid].append(rid)
        self.mr = max(len(rs) for rs in self.v_r.values())
        for v in self.v_r:
            self.v_r[v] = sorted(self.v_r[v])
        self.id_r = {i: r for r, i in self.r_id.items()}

    def to_tensor(self, ann: dict) -> list[int]:
        items = [self.v_id[ann["verb"]]]
        for frame in ann["frames"]:
            pairs = sorted((self.r_id[r], self.n_id[n]) for r, n in frame.items())
            for r, n in pairs:
                items += [r, n]
            items += [-1, -1] * (self.mr - len(pairs))
        return items


def official_scores(dataset: dict, frames_per_verb: dict, scores: dict, nref: int = 3) -> dict:
    """top-1 and top-5 imSituTensorEvaluation on one batch, then baseline_crf's mean."""
    enc = Encoder(dataset)
    verbs = sorted(enc.v_id, key=enc.v_id.get)
    cards = {1: {}, 5: {}}
    for image, ann in dataset.items():
        _ref = enc.to_tensor(ann)
        # the prediction tensor: for every verb id, noun ids in that verb's role order
        _pred = [[enc.n_id.get(frames_per_verb[image][v].get(enc.id_r[r]), -3) for r in enc.v_r[enc.v_id[v]]]
                 + [0] * (enc.mr - len(enc.v_r[enc.v_id[v]])) for v in verbs]
        _sorted_idx = sorted(range(len(verbs)), key=lambda v: -scores[image][verbs[v]])
        for topk in (1, 5):
            max_r = (len(_ref) - 1) // 2 // nref
            gt_v = _ref[0]
            card = cards[topk].setdefault(gt_v, {"verb": 0.0, "n_image": 0.0, "value": 0.0, "value*": 0.0,
                                                 "n_value": 0.0, "value-all": 0.0, "value-all*": 0.0})
            v_roles = []
            for k in range(max_r):
                if _ref[2 * k + 1] == -1:
                    break
                v_roles.append(_ref[2 * k + 1])
            card["n_image"] += 1
            card["n_value"] += len(v_roles)
            verb_found = sum(i == gt_v for i in _sorted_idx[:topk]) == 1
            if verb_found:
                card["verb"] += 1
            p_frame = _pred[gt_v]
            all_found = True
            for k in range(len(v_roles)):
                found = any(p_frame[k] == _ref[1 + 2 * max_r * r + 2 * k + 1] for r in range(nref))
                if not found:
                    all_found = False
                if found and verb_found:
                    card["value"] += 1
                if found:
                    card["value*"] += 1
            if all_found and verb_found:
                card["value-all"] += 1
            if all_found:
                card["value-all*"] += 1
    out = {}
    for topk, by_verb in cards.items():
        rv = {"verb": 0, "value": 0, "value*": 0, "value-all": 0, "value-all*": 0}
        for card in by_verb.values():
            rv["verb"] += card["verb"] / card["n_image"]
            rv["value-all"] += card["value-all"] / card["n_image"]
            rv["value-all*"] += card["value-all*"] / card["n_image"]
            rv["value"] += card["value"] / card["n_value"]
            rv["value*"] += card["value*"] / card["n_value"]
        out[topk] = {k: v / len(by_verb) for k, v in rv.items()}
    t1, t5 = out[1], out[5]
    mean = (t1["verb"] + t1["value"] + t1["value-all"] + t5["verb"] + t5["value"] + t5["value-all"]
            + t5["value*"] + t5["value-all*"]) / 8
    return {"top1_verb": t1["verb"], "top1_value": t1["value"], "top1_value_all": t1["value-all"],
            "top5_verb": t5["verb"], "top5_value": t5["value"], "top5_value_all": t5["value-all"],
            "gt_value": t5["value*"], "gt_value_all": t5["value-all*"], "mean": mean}


# --- hand-made cases -------------------------------------------------------------------------

ROLES = {"jumping": ("agent", "place"), "cutting": ("agent", "item", "tool", "place"), "sitting": ("agent",)}


def gt_entry(verb: str, *frames: dict) -> dict:
    return {"verb": verb, "frames": [dict(f) for f in frames]}


def ranked(*entries: tuple[str, dict]) -> list[dict]:
    return [{"verb": v, "frame": dict(f)} for v, f in entries]


def score(gt: dict, results: dict) -> dict:
    situations = {k: Situation(v["verb"], v["frames"]) for k, v in gt.items()}
    return score_situations(situations, results)


MAN = {"agent": "man", "place": "field"}
FILLER = [("sitting", {"agent": "dog"}), ("cutting", {"agent": "x", "item": "y", "tool": "z", "place": "w"})]


def test_a_role_matches_any_annotator_but_only_its_own_role():
    gt = {"a.jpg": gt_entry("jumping", {"agent": "man", "place": "field"}, {"agent": "boy", "place": "outdoors"},
                            {"agent": "person", "place": "field"})}
    assert score(gt, {"a.jpg": ranked(("jumping", {"agent": "boy", "place": "field"}))})["top1_value"] == 1.0
    # the third annotator alone says "person": still a match
    assert score(gt, {"a.jpg": ranked(("jumping", {"agent": "person", "place": "outdoors"}))})["top1_value_all"] == 1.0
    # "field" is a place in every reference, never an agent
    s = score(gt, {"a.jpg": ranked(("jumping", {"agent": "field", "place": "man"}))})
    assert s["top1_verb"] == 1.0 and s["top1_value"] == 0.0 and s["gt_value"] == 0.0


def test_empty_nouns_match_empty_nouns():
    gt = {"a.jpg": gt_entry("cutting", *[{"agent": "man", "item": "bread", "tool": "", "place": ""}] * 3)}
    s = score(gt, {"a.jpg": ranked(("cutting", {"agent": "man", "item": "bread", "tool": "", "place": "kitchen"}))})
    assert s["top1_value"] == 0.75 and s["top1_value_all"] == 0.0


def test_value_needs_the_verb_within_top_k_and_value_star_does_not():
    gt = {"a.jpg": gt_entry("jumping", MAN, MAN, MAN)}
    second = ranked(("sitting", {"agent": "man"}), ("jumping", MAN), *FILLER[1:])
    s = score(gt, {"a.jpg": second})
    assert (s["top1_verb"], s["top1_value"], s["top1_value_all"]) == (0.0, 0.0, 0.0)
    assert (s["top5_verb"], s["top5_value"], s["top5_value_all"]) == (1.0, 1.0, 1.0)
    assert (s["gt_value"], s["gt_value_all"]) == (1.0, 1.0)
    # the frame given to the ground-truth verb beyond the top 5 still counts for value*
    sixth = ranked(*[(f"v{i}", {}) for i in range(5)], ("jumping", {"agent": "man", "place": "road"}))
    s = score(gt, {"a.jpg": sixth})
    assert s["top5_verb"] == 0.0 and s["top5_value"] == 0.0 and s["gt_value"] == 0.5 and s["gt_value_all"] == 0.0
    # no frame for it at all: no role matches
    assert score(gt, {"a.jpg": ranked(("sitting", {"agent": "man"}))})["gt_value"] == 0.0


def test_averages_are_per_verb_then_over_verbs():
    gt = {f"j{i}": gt_entry("jumping", MAN, MAN, MAN) for i in range(3)}
    gt["c0"] = gt_entry("cutting", *[{"agent": "man", "item": "bread", "tool": "knife", "place": "kitchen"}] * 3)
    results = {f"j{i}": ranked(("jumping", MAN)) for i in range(3)}
    results["c0"] = ranked(("cutting", {"agent": "man", "item": "x", "tool": "x", "place": "x"}))
    s = score(gt, results)
    assert s["top1_verb"] == 1.0
    assert s["top1_value"] == pytest.approx((1.0 + 0.25) / 2)  # not (6 + 1) / 10 roles
    assert s["top1_value_all"] == pytest.approx((1.0 + 0.0) / 2)
    results["c0"] = ranked(("sitting", {"agent": "man"}))
    assert score(gt, results)["top1_verb"] == pytest.approx(0.5)  # not 3 / 4 images


def test_mean_is_the_eight_numbers_of_baseline_crf():
    gt = {"a": gt_entry("jumping", MAN, MAN, MAN), "b": gt_entry("sitting", *[{"agent": "dog"}] * 3)}
    results = {"a": ranked(("sitting", {"agent": "x"}), ("jumping", {"agent": "man", "place": "x"})),
               "b": ranked(("sitting", {"agent": "dog"}))}
    s = score(gt, results)
    eight = [s[k] for k in KEYS if k != "mean"]
    assert s["mean"] == pytest.approx(sum(eight) / 8)


# --- random ground truth and results ------------------------------------------------------------

VERB_ROLES = {"jumping": ["agent", "place", "obstacle"], "cutting": ["agent", "item", "tool", "place"],
              "sitting": ["agent", "place"], "riding": ["agent", "vehicle", "place"], "eating": ["agent", "food"],
              "pushing": ["agent", "item", "place", "destination"], "opening": ["agent", "item"]}
NOUNS = ["man", "woman", "dog", "", "field", "road", "knife", "bread", "car", "horse", "kitchen", "n0001", "n0002"]


def random_case(seed: int, n: int = 200):
    rng = random.Random(seed)
    gt, frames, scores = {}, {}, {}
    for i in range(n):
        verb = rng.choice(list(VERB_ROLES))
        truth = {r: rng.choice(NOUNS) for r in VERB_ROLES[verb]}
        refs = [{r: (noun if rng.random() < 0.7 else rng.choice(NOUNS)) for r, noun in truth.items()}
                for _ in range(3)]
        image = f"{verb}_{i}.jpg"
        gt[image] = {"verb": verb, "frames": refs}
        frames[image] = {v: {r: (truth.get(r) if rng.random() < 0.5 and r in truth else rng.choice(NOUNS))
                             for r in roles} for v, roles in VERB_ROLES.items()}
        scores[image] = {v: rng.random() + (0.5 if v == verb and rng.random() < 0.4 else 0) for v in VERB_ROLES}
    return gt, frames, scores


@pytest.mark.parametrize("seed", range(5))
def test_random_results_equal_the_official_loop(seed, tmp_path, capsys):
    gt, frames, scores = random_case(seed)
    expected = official_scores(gt, frames, scores)
    rng = random.Random(seed)
    results = {}
    for image in gt:
        order = sorted(frames[image], key=lambda v: -scores[image][v])
        keep = order[:5] + ([gt[image]["verb"]] if gt[image]["verb"] not in order[:5] else [])
        results[image] = [{"verb": v, "frame": frames[image][v]} for v in (order if rng.random() < 0.5 else keep)]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    situations, loaded, without = load_situation_files(tmp_path / "gt.json", tmp_path / "res.json")
    assert without == 0
    got = score_situations(situations, loaded)
    assert got == pytest.approx(expected, abs=1e-12)
    code, out, err = run_score_cli(["situation", "--gt", str(tmp_path / "gt.json"), "--results",
                                    str(tmp_path / "res.json"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out) == pytest.approx(expected, abs=1e-12)
    assert set(json.loads(out)) == set(KEYS)


# --- the command and its errors --------------------------------------------------------------------


def test_cli_table_and_missing_frame_note(tmp_path, capsys):
    gt = {"a.jpg": gt_entry("jumping", MAN, MAN, MAN)}
    (tmp_path / "g.json").write_text(json.dumps(gt))
    (tmp_path / "r.json").write_text(json.dumps({"a.jpg": ranked(("sitting", {"agent": "man"}))}))
    code, out, err = run_score_cli(["situation", "--gt", str(tmp_path / "g.json"), "--results",
                                    str(tmp_path / "r.json")], capsys)
    assert code == 0 and "top-1 verb" in out and "mean" in out
    assert "1 of 1 images have no frame for their ground-truth verb" in err


@pytest.mark.parametrize(("results", "message"), [
    ({}, "no prediction for 1 ground-truth image(s), e.g. 'a.jpg'"),
    ({"a.jpg": ranked(("jumping", MAN)), "z.jpg": ranked(("jumping", MAN))}, "image 'z.jpg' is not in the ground"),
    ({"a.jpg": ranked(("jumping", MAN), ("jumping", MAN))}, "lists verb 'jumping' twice"),
    ({"a.jpg": ranked(("jumping", {"agent": "man"}))}, "verb 'jumping': the frame has no noun for role 'place'"),
    ({"a.jpg": [{"verb": "jumping"}]}, "image 'a.jpg' entry 0 needs a verb and a frame"),
])
def test_results_errors_name_the_entry(results, message):
    gt = {"a.jpg": Situation("jumping", [MAN, MAN, MAN])}
    with pytest.raises(Exception) as error:
        parse_results(results, gt, "results 'r.json'")
    assert message in str(error.value)


def test_gt_frames_must_share_roles(tmp_path, capsys):
    gt = {"a.jpg": gt_entry("jumping", MAN, {"agent": "man"}, MAN)}
    (tmp_path / "g.json").write_text(json.dumps(gt))
    (tmp_path / "r.json").write_text("{}")
    code, _, err = run_score_cli(["situation", "--gt", str(tmp_path / "g.json"), "--results",
                                  str(tmp_path / "r.json")], capsys)
    assert code == 2 and "image 'a.jpg' frame 1 has roles ['agent']" in err
