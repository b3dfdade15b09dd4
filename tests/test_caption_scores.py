"""Caption scorers against pycocoevalcap, the reference they must reproduce.

BLEU, ROUGE-L and CIDEr-D are compared with pycocoevalcap's scorers on generated
caption sets (several seeds, edge cases); the Python PTB tokenizer with Stanford's
jar on a few hundred generated captions; METEOR with pycocoevalcap's Meteor (Java);
all of them with the values nlg-eval publishes for ../shared/data/nlg_eval; and the
`cvtrain-score` command on small COCO files. Java-only tests skip without Java.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_score_cli

from cvtrain.errors import UserError
from cvtrain.metrics.captioning import load_coco_files, ptb_tokenize, score_captions
from cvtrain.metrics.captioning import meteor as meteor_module
from cvtrain.metrics.captioning.bleu import compute_bleu
from cvtrain.metrics.captioning.cider import compute_cider
from cvtrain.metrics.captioning.meteor import compute_meteor
from cvtrain.metrics.captioning.rouge import compute_rouge
from cvtrain.metrics.captioning.tokenize import java_tokenizer_available

pycoco_bleu = pytest.importorskip("pycocoevalcap.bleu.bleu")
from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NLG_EVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "nlg_eval"
HAVE_JAVA = java_tokenizer_available()[0]
needs_java = pytest.mark.skipif(not HAVE_JAVA, reason="needs a Java runtime and pycocoevalcap's jars")
needs_nlg_eval = pytest.mark.skipif(not NLG_EVAL.is_dir(), reason="../shared/data/nlg_eval is absent")

# ---------------------------------------------------------------------------------
# Generated captions
# ---------------------------------------------------------------------------------

WORDS = (
    "a an the man woman dog cat two young old on in at with of and is are red white black small large table "
    "street beach horse bike pizza plate kite frisbee sitting standing riding holding eating playing near"
).split()


def tokenized_set(seed: int, images: int = 60) -> tuple[dict, dict]:
    """Already-tokenized references and candidates, with the edge cases scorers trip on."""
    rng = random.Random(seed)
    words = WORDS[: rng.randint(8, len(WORDS))]  # small vocabularies: many repeats and matches

    def caption() -> str:
        length = rng.choice([0, 1, 1, 2, 3] + list(range(4, 16)))
        return " ".join(rng.choice(words) for _ in range(length))

    gts, res = {}, {}
    for image in range(images):
        refs = [caption() for _ in range(rng.randint(1, 6))]
        if not any(refs):
            refs[0] = caption() or "a dog"  # pycocoevalcap's CIDEr fails when no reference has a word
        candidate = rng.choice(refs) if rng.random() < 0.15 else caption()
        if rng.random() < 0.1:
            candidate = " ".join([rng.choice(words)] * rng.randint(1, 6))  # one word repeated
        key = f"img{image}" if seed % 2 else image
        gts[key], res[key] = refs, [candidate]
    return gts, res


SEEDS = [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("seed", SEEDS)
def test_bleu_equals_pycocoevalcap(seed):
    gts, res = tokenized_set(seed)
    expected, expected_per_image = pycoco_bleu.Bleu(4).compute_score(gts, res, verbose=0)
    score, per_image = compute_bleu(gts, res)
    assert score == pytest.approx(expected, abs=1e-6)
    for ours, theirs in zip(per_image, expected_per_image):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_rouge_equals_pycocoevalcap(seed):
    gts, res = tokenized_set(seed)
    gts[next(iter(gts))].append("  a  dog ")  # raw spacing: rouge.py splits on single spaces
    expected, expected_per_image = Rouge().compute_score(gts, res)
    score, per_image = compute_rouge(gts, res)
    assert score == pytest.approx(expected, abs=1e-6)
    np.testing.assert_allclose(per_image, expected_per_image, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_cider_equals_pycocoevalcap(seed):
    gts, res = tokenized_set(seed)
    expected, expected_per_image = Cider().compute_score(gts, res)
    score, per_image = compute_cider(gts, res)
    assert score == pytest.approx(expected, abs=1e-6)
    np.testing.assert_allclose(per_image, expected_per_image, rtol=0, atol=1e-6)


def test_huge_vocabulary_falls_back_to_python_int_keys():
    """Over 2^15 distinct words, four word ids no longer fit one uint64: exact Python ints."""
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(40000)]
    gts = {i: [" ".join(rng.choices(vocab[:200] if k else vocab, k=9)) for k in range(3)] for i in range(1500)}
    res = {i: [" ".join(rng.choices(vocab[:200], k=8))] for i in range(1500)}
    assert compute_bleu(gts, res)[0] == pytest.approx(pycoco_bleu.Bleu(4).compute_score(gts, res, verbose=0)[0])
    assert compute_cider(gts, res)[0] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-6)


def test_score_captions_equals_the_three_scorers():
    gts, res = tokenized_set(7, images=200)
    scores = score_captions(gts, res, tokenize=False, meteor=False)
    bleu, _ = pycoco_bleu.Bleu(4).compute_score(gts, res, verbose=0)
    assert [scores[f"bleu{k}"] for k in (1, 2, 3, 4)] == pytest.approx(bleu, abs=1e-6)
    assert scores["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-6)
    assert scores["cider"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-6)
    assert "meteor" not in scores


def test_single_image_and_one_word_captions():
    gts, res = {1: ["dog", "a dog"]}, {1: ["dog"]}
    scores = score_captions(gts, res, tokenize=False, meteor=False)
    assert scores["cider"] == 0.0  # one image: every n-gram is in all of them, idf 0
    assert scores["bleu1"] == pytest.approx(pycoco_bleu.Bleu(4).compute_score(gts, res, verbose=0)[0][0], abs=1e-12)
    assert scores["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-12)


def test_mismatched_ids_are_user_errors():
    with pytest.raises(UserError, match="different images"):
        score_captions({1: ["a dog"]}, {2: ["a dog"]}, tokenize=False, meteor=False)
    with pytest.raises(UserError, match="exactly one candidate"):
        score_captions({1: ["a dog"]}, {1: ["a dog", "a cat"]}, tokenize=False, meteor=False)


# ---------------------------------------------------------------------------------
# PTB tokenization
# ---------------------------------------------------------------------------------

EXAMPLES = {
    "A man don't like the dog's bone.": "a man do n't like the dog 's bone",
    'It\'s a black-and-white photo (grey) of "cats".': "it 's a black-and-white photo -lrb- grey -rrb- of cats",
    "Two dogs' toys... and -- a 'single' word": "two dogs toys and a single word",
    "Mr. Smith at 3:30 p.m. with $5.50, 1,000 people & 50%": "mr. smith at 3:30 p.m. with $ 5.50 1,000 people & 50 %",
    "I can't, won't; they're here!": "i ca n't wo n't they 're here",
    "“Curly” quotes — and a café.": "curly quotes and a café",
    "...": "",
}


def test_python_tokenizer_on_known_examples():
    out = ptb_tokenize({i: [text] for i, text in enumerate(EXAMPLES)})
    assert [caps[0] for caps in out.values()] == list(EXAMPLES.values())


FRAGMENTS = (
    WORDS
    + "don't can't won't it's dog's dogs' I'm you're they'll o'clock y'all '90s 'tis cannot gonna".split()
    + "black-and-white T-shirt x-ray 12-year-old 3.5 1,000 5:30 1/2 ½ 50% $5 #1 2nd 4x4 555-1234".split()
    + "Mr. Dr. St. U.S. U.S.A. a.m. etc. vs. e.g. Inc. Jan. No. A. I. TV OK".split()
    + list("&+=*/\\@#%~^|<>()[]{}:;!?\"'`_-")
    + ["--", "...", "…", "—", "“", "”", "‘", "’", ":)", "&amp;", "...."]
    + "café naïve jalapeño www.google.com http://example.com/a dog@example.com @user #tag AT&T hello.world".split()
)


def generated_captions(count: int, seed: int = 0) -> list[str]:
    """Varied captions: words with punctuation, quotes, contractions, numbers, abbreviations."""
    rng = random.Random(seed)
    captions = []
    for i in range(count):
        pieces = []
        for _ in range(rng.randint(0, 14)):
            word = rng.choice(FRAGMENTS)
            if rng.random() < 0.1:
                word = word.capitalize()
            pieces.append(word)
            if i % 3 == 0:  # every third caption: punctuation glued on
                pieces.append(rng.choice(["", "", ".", ",", "'", '"', "(", ")", "-", "/", "!", "'s"]))
            pieces.append(rng.choice([" ", " ", " ", "", "  "]) if i % 3 == 0 else " ")
        captions.append("".join(pieces).strip() + rng.choice(["", ".", ".", " .", "!", "?", "..."]))
    return captions


@pytest.fixture(scope="module")
def java_tokenized():
    """Captions and what pycocoevalcap's PTBTokenizer (the jar) makes of them, in one Java run."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = {i: [c] for i, c in enumerate(generated_captions(400))}
    if NLG_EVAL.is_dir():
        for name in ("hyp.txt", "ref1.txt", "ref2.txt"):
            for line in (NLG_EVAL / name).read_text().splitlines():
                captions[f"{name}:{len(captions)}"] = [line]
    expected = PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    return captions, expected


@needs_java
def test_python_tokenizer_equals_the_jar(java_tokenized):
    captions, expected = java_tokenized
    ours = ptb_tokenize(captions)
    different = {k: (captions[k], ours[k], expected[k]) for k in captions if ours[k] != expected[k]}
    assert not different, f"{len(different)} of {len(captions)} differ, e.g. {list(different.values())[:3]}"


@needs_java
def test_java_tokenizer_option_equals_pycocoevalcap(java_tokenized):
    captions, expected = java_tokenized
    assert ptb_tokenize(captions, tokenizer="java") == expected


def test_unknown_tokenizer_is_a_user_error():
    with pytest.raises(UserError, match="unknown tokenizer"):
        ptb_tokenize({1: ["a dog"]}, tokenizer="perl")


# ---------------------------------------------------------------------------------
# METEOR (Java)
# ---------------------------------------------------------------------------------


@needs_java
def test_meteor_equals_pycocoevalcap():
    from pycocoevalcap.meteor.meteor import Meteor

    gts, res = tokenized_set(11, images=40)
    expected, expected_per_image = Meteor().compute_score(gts, res)
    score, per_image = compute_meteor(gts, res)
    assert score == pytest.approx(expected, abs=1e-6)
    np.testing.assert_allclose(per_image, expected_per_image, rtol=0, atol=1e-6)


def test_meteor_skipped_in_one_line_without_java(monkeypatch, capsys):
    monkeypatch.setattr(meteor_module.shutil, "which", lambda name: None)
    scores = score_captions({1: ["a dog"]}, {1: ["a dog"]}, tokenize=False)
    assert "meteor" not in scores and "cider" in scores
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["METEOR skipped: no Java runtime found (install a JRE, e.g. apt-get install default-jre-headless)"]


def test_meteor_jar_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(meteor_module.JAR_ENV, str(tmp_path / "missing.jar"))
    monkeypatch.setattr(meteor_module.shutil, "which", lambda name: "/usr/bin/java")
    ok, why = meteor_module.available()
    assert not ok and "missing.jar" in why


# ---------------------------------------------------------------------------------
# Published values: nlg-eval's test data
# ---------------------------------------------------------------------------------

KEYS = {"Bleu_1": "bleu1", "Bleu_2": "bleu2", "Bleu_3": "bleu3", "Bleu_4": "bleu4"}
KEYS |= {"METEOR": "meteor", "ROUGE_L": "rouge_l", "CIDEr": "cider"}


def published() -> dict:
    """expected_scores.json with each number kept as printed (its precision sets the tolerance)."""
    return json.loads((NLG_EVAL / "expected_scores.json").read_text(), parse_float=str)


def tolerance(printed: str) -> float:
    """1e-6, or one unit of the last printed digit where fewer digits were printed."""
    mantissa, _, exponent = printed.lower().partition("e")
    decimals = len(mantissa.partition(".")[2]) - int(exponent or 0)
    return max(1e-6, 10.0**-decimals)


def nlg_eval_sets() -> dict[str, tuple[dict, dict]]:
    hyp = (NLG_EVAL / "hyp.txt").read_text().splitlines()
    refs = zip((NLG_EVAL / "ref1.txt").read_text().splitlines(), (NLG_EVAL / "ref2.txt").read_text().splitlines())
    single = published()["single"]
    return {
        "corpus": (
            {i: [a.strip(), b.strip()] for i, (a, b) in enumerate(refs)},
            {i: [h.strip()] for i, h in enumerate(hyp)},
        ),
        "single": ({0: single["refs"]}, {0: [single["hyp"]]}),
    }


@pytest.fixture(scope="module")
def nlg_eval_scores():
    sets = nlg_eval_sets()
    return {name: score_captions(gts, res, tokenize=False, meteor=HAVE_JAVA) for name, (gts, res) in sets.items()}


@needs_nlg_eval
@pytest.mark.parametrize("case", ["corpus", "single"])
def test_published_nlg_eval_scores(case, nlg_eval_scores):
    expected = {KEYS[k]: v for k, v in published()[case].items() if k in KEYS}
    if not HAVE_JAVA:
        expected.pop("meteor")
    ours = nlg_eval_scores[case]
    for key, printed in expected.items():
        assert ours[key] == pytest.approx(float(printed), abs=tolerance(printed)), key


@needs_nlg_eval
@pytest.mark.parametrize("case", ["corpus", "single"])
def test_nlg_eval_equals_pycocoevalcap(case, nlg_eval_scores):
    gts, res = nlg_eval_sets()[case]
    bleu, _ = pycoco_bleu.Bleu(4).compute_score(gts, res, verbose=0)
    ours = nlg_eval_scores[case]
    assert [ours[f"bleu{k}"] for k in (1, 2, 3, 4)] == pytest.approx(bleu, abs=1e-6)
    assert ours["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-6)
    assert ours["cider"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-6)


# ---------------------------------------------------------------------------------
# COCO files and the cvtrain-score command
# ---------------------------------------------------------------------------------

ANNOTATIONS = {
    "images": [{"id": 1}, {"id": 2}, {"id": 3}],
    "annotations": [
        {"image_id": 1, "id": 1, "caption": "A man riding a horse on the beach."},
        {"image_id": 1, "id": 2, "caption": "A person rides a brown horse along the shore."},
        {"image_id": 2, "id": 3, "caption": "Two dogs playing with a frisbee in the park."},
        {"image_id": 2, "id": 4, "caption": "Dogs play with a red frisbee on the grass."},
        {"image_id": 3, "id": 5, "caption": "A plate of food with broccoli and rice."},
        {"image_id": 3, "id": 6, "caption": "Rice, broccoli and chicken on a white plate."},
    ],
}
RESULTS = [
    {"image_id": 1, "caption": "a man riding a horse on a beach"},
    {"image_id": 2, "caption": "two dogs playing in the grass"},
    {"image_id": 3, "caption": "a plate of rice and broccoli"},
]


@pytest.fixture
def coco_files(tmp_path):
    gt, results = tmp_path / "captions_gt.json", tmp_path / "results.json"
    gt.write_text(json.dumps(ANNOTATIONS))
    results.write_text(json.dumps(RESULTS))
    return gt, results


def cli_args(gt: Path, results: Path) -> list[str]:
    return ["captions", "--gt", str(gt), "--results", str(results)]


def test_cli_json_output(coco_files, capsys):
    gt, results = coco_files
    code, out, err = run_score_cli([*cli_args(gt, results), "--json", "--no-meteor"], capsys)
    assert code == 0, err
    scores = json.loads(out)
    assert set(scores) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider"}
    data = load_coco_files(gt, results)
    assert scores == score_captions(data.gts, data.res, meteor=False)


def test_cli_table_output(coco_files, capsys):
    gt, results = coco_files
    code, out, _ = run_score_cli([*cli_args(gt, results), "--no-meteor"], capsys)
    assert code == 0
    labels = [line.split()[0] for line in out.splitlines()]
    assert labels == ["images", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"]


def test_cli_missing_file_is_one_line(coco_files, capsys, tmp_path):
    _, results = coco_files
    code, out, err = run_score_cli(["captions", "--gt", str(tmp_path / "nope.json"), "--results", str(results)], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "nope.json" in err and "not found" in err


def test_cli_unknown_result_id_is_one_line(coco_files, capsys):
    gt, results = coco_files
    results.write_text(json.dumps(RESULTS + [{"image_id": 99, "caption": "a cat"}]))
    code, _, err = run_score_cli([*cli_args(gt, results), "--no-meteor"], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "[99]" in err and "not in the annotations" in err


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ('[{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}]', "more than one result"),
        ('[{"image_id": 1, "caption": "a"', "not valid JSON"),
        ('{"image_id": 1}', "expected a JSON list"),
    ],
)
def test_bad_results_files_are_user_errors(coco_files, results, message):
    gt, path = coco_files
    path.write_text(results)
    with pytest.raises(UserError, match=message):
        load_coco_files(gt, path)


def test_partial_results_score_only_their_images(coco_files):
    gt, results = coco_files
    results.write_text(json.dumps(RESULTS[:2]))
    data = load_coco_files(gt, results)
    assert list(data.gts) == [1, 2] and data.annotated_images == 3


@needs_java
def test_cli_equals_the_coco_evaluation_pipeline(coco_files, capsys):
    """PTB tokenization by the jar, then pycocoevalcap's scorers: what COCOEvalCap.evaluate does."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gt, results = coco_files
    code, out, err = run_score_cli([*cli_args(gt, results), "--json", "--no-meteor"], capsys)
    assert code == 0, err
    gts = {i: [{"caption": a["caption"]} for a in ANNOTATIONS["annotations"] if a["image_id"] == i] for i in (1, 2, 3)}
    res = {r["image_id"]: [{"caption": r["caption"]}] for r in RESULTS}
    gts, res = PTBTokenizer().tokenize(gts), PTBTokenizer().tokenize(res)
    bleu, _ = pycoco_bleu.Bleu(4).compute_score(gts, res, verbose=0)
    expected = dict(zip(["bleu1", "bleu2", "bleu3", "bleu4"], bleu))
    expected |= {"rouge_l": Rouge().compute_score(gts, res)[0], "cider": Cider().compute_score(gts, res)[0]}
    assert json.loads(out) == pytest.approx(expected, abs=1e-6)


def test_cli_runs_as_a_command_and_stays_light(coco_files):
    """The entry point works in a fresh process, and neither it nor the scorers import torch."""
    gt, results = coco_files
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cvtrain.score_cli",
            "captions",
            "--gt",
            str(gt),
            "--results",
            str(results),
            "--json",
            "--no-meteor",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) >= {"bleu4", "cider"}
    # Import the caption modules under an empty `cvtrain.metrics` (whose __init__ registers
    # the torch-based metrics): they must not pull torch in themselves.
    probe = (
        "import sys, types, cvtrain; from pathlib import Path; "
        "pkg = types.ModuleType('cvtrain.metrics'); pkg.__path__ = [str(Path(cvtrain.__file__).parent / 'metrics')]; "
        "sys.modules['cvtrain.metrics'] = pkg; import cvtrain.score_cli, cvtrain.metrics.captioning; "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
