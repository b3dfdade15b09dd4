"""VQA accuracy against the official evaluation's definition (GT-Vision-Lab/VQA vqaEval.py).

The official code cannot be installed here, so `OfficialVQAEval` below transcribes its
loops as they are written (in-place edits of the annotations, dict inequality for the
leave-one-out subsets, `sub("", text, re.UNICODE)` with the flag landing in `count`),
independently of cvtrain/metrics/vqa.py. Hand-made cases pin every normalisation rule;
random results files compare the two implementations.
"""

from __future__ import annotations

import copy
import json
import random
import re

import pytest
from conftest import run_score_cli

from cvtrain.metrics import vqa as V

# --- an independent transcription of vqaEval.py's evaluate() ---------------------------


class OfficialVQAEval:
    """VQAEval.evaluate over the dicts of the questions, annotations and results files."""

    contractions = V.CONTRACTIONS  # data tables are shared; the code below is written separately
    manualMap = dict(V.MANUAL_MAP)
    articles = ["a", "an", "the"]
    periodStrip = re.compile(r"(?!<=\d)(\.)(?!\d)")
    commaStrip = re.compile(r"(\d)(\,)(\d)")
    punct = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]

    def __init__(self, annotations: dict, results: list, n: int = 2):
        self.qa = {ann["question_id"]: ann for ann in copy.deepcopy(annotations)["annotations"]}
        self.quesIds = [ann["question_id"] for ann in annotations["annotations"]]
        assert {r["question_id"] for r in results} == set(self.quesIds)
        self.res = {r["question_id"]: r for r in results}
        self.n, self.accuracy, self.evalQA = n, {}, {}

    def processPunctuation(self, inText):
        outText = inText
        for p in self.punct:
            if (p + " " in inText or " " + p in inText) or (re.search(self.commaStrip, inText) is not None):
                outText = outText.replace(p, "")
            else:
                outText = outText.replace(p, " ")
        outText = self.periodStrip.sub("", outText, re.UNICODE)
        return outText

    def processDigitArticle(self, inText):
        outText = []
        for word in inText.lower().split():
            word = self.manualMap.setdefault(word, word)
            if word not in self.articles:
                outText.append(word)
        for wordId, word in enumerate(outText):
            if word in self.contractions:
                outText[wordId] = self.contractions[word]
        return " ".join(outText)

    def evaluate(self):
        accQA, accQuesType, accAnsType = [], {}, {}
        for quesId in self.quesIds:
            gts = self.qa[quesId]
            resAns = self.res[quesId]["answer"]
            resAns = resAns.replace("\n", " ").replace("\t", " ").strip()
            resAns = self.processDigitArticle(self.processPunctuation(resAns))
            gtAcc = []
            gtAnswers = [ans["answer"] for ans in gts["answers"]]
            if len(set(gtAnswers)) > 1:
                for ansDic in gts["answers"]:
                    ansDic["answer"] = self.processPunctuation(ansDic["answer"])
            for gtAnsDatum in gts["answers"]:
                otherGTAns = [item for item in gts["answers"] if item != gtAnsDatum]
                matchingAns = [item for item in otherGTAns if item["answer"] == resAns]
                gtAcc.append(min(1, float(len(matchingAns)) / 3))
            avgGTAcc = float(sum(gtAcc)) / len(gtAcc)
            accQA.append(avgGTAcc)
            accQuesType.setdefault(gts["question_type"], []).append(avgGTAcc)
            accAnsType.setdefault(gts["answer_type"], []).append(avgGTAcc)
            self.evalQA[quesId] = round(100 * avgGTAcc, self.n)
        r = lambda xs: round(100 * float(sum(xs)) / len(xs), self.n)  # noqa: E731
        self.accuracy = {"overall": r(accQA), "perQuestionType": {k: r(v) for k, v in accQuesType.items()},
                         "perAnswerType": {k: r(v) for k, v in accAnsType.items()}}


def annotation(qid: int, answers: list[str], qtype: str = "what", atype: str = "other", ids: bool = True) -> dict:
    return {"question_id": qid, "image_id": qid // 10, "question_type": qtype, "answer_type": atype,
            "multiple_choice_answer": answers[0],
            "answers": [{"answer": a, "answer_confidence": "yes", **({"answer_id": i + 1} if ids else {})}
                        for i, a in enumerate(answers)]}


def acc(answers: list[str], predicted: str, ids: bool = True) -> float:
    """cvtrain's accuracy of one question, checked against the transcription."""
    ann = annotation(1, answers, ids=ids)
    ours = V.question_accuracy(ann["answers"], predicted)
    official = OfficialVQAEval({"annotations": [ann]}, [{"question_id": 1, "answer": predicted}])
    official.evaluate()
    assert round(100 * ours, 2) == official.evalQA[1]
    return ours


# --- normalisation, rule by rule ---------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("yes!", "yes "),  # a mark with no space beside it becomes a space
    ("hot-dog", "hot dog"),
    ("hot - dog", "hot  dog"),  # beside a space: deleted
    ("red, blue", "red blue"),
    ("1,000", "1000"),  # digit-comma-digit: every mark is deleted, not spaced
    ("(a)/b", " a  b"),
    ("3.5", "3.5"),  # a period before a digit stays
    ("yes.", "yes"),  # any other period goes
    ("a.b.c", "abc"),
    ("10:30", "10:30"),  # ':' and "'" are not punctuation to the official code
    ("don't", "don't"),
    ("." * 40 + "x", "." * 8 + "x"),  # re.UNICODE passed as count: at most 32 periods go
    ('say "hi"?', "say hi "),  # '"' has a space beside it somewhere: every '"' goes
])
def test_process_punctuation(text, expected):
    assert V.process_punctuation(text) == expected
    assert OfficialVQAEval.processPunctuation(OfficialVQAEval.__new__(OfficialVQAEval), text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Two", "2"), ("none", "0"), ("zero", "0"), ("ten dogs", "10 dogs"), ("eleven", "eleven"),
    ("a dog", "dog"), ("the  cat", "cat"), ("an apple", "apple"), ("A", ""),
    ("dont", "don't"), ("isnt it", "isn't it"), ("Im", "im"),  # capitalised keys never match after lower()
    ("whats", "what's"), ("  many   spaces ", "many spaces"),
])
def test_process_digit_article(text, expected):
    assert V.process_digit_article(text) == expected


def test_prediction_is_cleaned_of_newlines_tabs_and_edges():
    assert V.clean_prediction("\tThe\nTwo dogs. ") == "2 dogs"


# --- accuracy: leave one annotator out ------------------------------------------------------


def test_ten_leave_one_out_subsets():
    assert acc(["cat"] * 10, "cat") == 1.0
    assert acc(["cat"] * 3 + ["dog"] * 7, "cat") == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)  # 0.9
    assert acc(["cat"] * 2 + ["dog"] * 8, "cat") == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)  # 0.6
    assert acc(["cat"] + ["dog"] * 9, "cat") == pytest.approx(0.9 * 1 / 3)
    assert acc(["dog"] * 10, "cat") == 0.0
    assert acc(["cat"] * 4 + ["dog"] * 6, "cat") == 1.0


def test_ground_truth_is_normalised_only_when_annotators_disagree():
    # unanimous "yes.": left as it is, so neither "yes" nor "yes." (cleaned to "yes") matches
    assert acc(["yes."] * 10, "yes") == 0.0
    assert acc(["yes."] * 10, "yes.") == 0.0
    # not unanimous: the punctuation goes, and "yes" matches nine of them
    assert acc(["yes."] * 9 + ["no"], "yes") == 1.0
    # and only punctuation: a human "two" never becomes "2", while the prediction does
    assert acc(["two"] * 9 + ["2"], "two") == pytest.approx(1 / 3 * 0.9)
    assert acc(["two"] * 10, "2") == 0.0
    assert acc(["the dog"] * 5 + ["dog"] * 5, "the dog") == 1.0  # the prediction loses its article
    assert acc(["hot-dog", "hot dog"] * 5, "hot dog") == 1.0  # both sides become 'hot dog'


def test_answers_compare_as_dicts():
    """otherGTAns drops every answer dict equal to the current one: with answer ids, just
    that one; without ids, all identical answers, so unanimous answers score 0."""
    assert acc(["yes"] * 10, "yes", ids=True) == 1.0
    assert acc(["yes"] * 10, "yes", ids=False) == 0.0
    assert acc(["yes"] * 5 + ["no"] * 5, "yes", ids=False) == pytest.approx(0.5 * 1.0)


def test_per_type_means_and_official_rounding():
    anns = [annotation(1, ["2"] * 10, "how many", "number"), annotation(2, ["yes"] * 10, "is there", "yes/no"),
            annotation(3, ["red"] * 2 + ["blue"] * 8, "what color", "other"),
            annotation(4, ["no"] * 10, "is there", "yes/no")]
    preds = {1: "two", 2: "yes", 3: "red", 4: "yes"}
    questions = {a["question_id"]: V.VQAQuestion(a["answers"], a["question_type"], a["answer_type"]) for a in anns}
    scores = V.score_vqa(questions, preds)
    assert scores.per_answer_type == pytest.approx({"number": 1.0, "yes/no": 0.5, "other": 0.6})
    assert scores.overall == pytest.approx(2.6 / 4)
    official = OfficialVQAEval({"annotations": anns}, [{"question_id": q, "answer": a} for q, a in preds.items()])
    official.evaluate()
    assert scores.official() == official.accuracy


# --- random results files -------------------------------------------------------------

POOL = ["yes", "yes.", "Yes", "no", "no!", "2", "two", "Two", "1,000", "1000", "the dog", "dog", "a dog",
        "hot-dog", "hot dog", "hot - dog", "dont", "don't", "3.5", "red", "red, blue", "red blue", "none", "0",
        "(red)", "ten", "10", "it's", "whats", "what's", "over the table", "over table"]


def random_files(seed: int, n: int = 300):
    rng = random.Random(seed)
    anns, results = [], []
    for qid in range(n):
        base = rng.choice(POOL)
        answers = [base if rng.random() < 0.6 else rng.choice(POOL) for _ in range(10)]
        atype = rng.choice(["yes/no", "number", "other"])
        anns.append(annotation(1000 + qid, answers, rng.choice(["what", "how many", "is the"]), atype,
                               ids=rng.random() < 0.9))
        predicted = rng.choice(answers + POOL)
        if rng.random() < 0.1:
            predicted = f" \t{predicted}\n"
        results.append({"question_id": 1000 + qid, "answer": predicted})
    rng.shuffle(results)
    questions = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014",
                 "license": {}, "questions": [{"question_id": a["question_id"], "image_id": a["image_id"],
                                               "question": "?"} for a in anns]}
    return questions, {"annotations": anns}, results


@pytest.mark.parametrize("seed", range(5))
def test_random_results_equal_the_official_loop(seed, tmp_path, capsys):
    questions, annotations, results = random_files(seed)
    official = OfficialVQAEval(annotations, results)
    official.evaluate()
    paths = {}
    for name, data in (("q", questions), ("a", annotations), ("r", results)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(data))
    qs, preds = V.load_vqa_files(paths["q"], paths["a"], paths["r"])
    scores = V.score_vqa(qs, preds)
    assert {q: round(100 * a, 2) for q, a in scores.per_question.items()} == official.evalQA
    assert scores.official() == official.accuracy
    code, out, err = run_score_cli(["vqa", "--questions", str(paths["q"]), "--annotations", str(paths["a"]),
                                    "--results", str(paths["r"]), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out) == {"overall": official.accuracy["overall"], **official.accuracy["perAnswerType"]}


# --- the command and its errors ------------------------------------------------------------


def write_files(tmp_path, questions, annotations, results):
    names = []
    for name, data in (("q", questions), ("a", annotations), ("r", results)):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
        names.append(str(tmp_path / f"{name}.json"))
    return ["vqa", "--questions", names[0], "--annotations", names[1], "--results", names[2]]


def test_cli_table_and_per_question_type(tmp_path, capsys):
    questions, annotations, results = random_files(7, n=20)
    code, out, _ = run_score_cli([*write_files(tmp_path, questions, annotations, results), "--per-question-type"],
                                 capsys)
    assert code == 0 and out.splitlines()[0].split() == ["questions", "20"]
    assert "overall" in out and "yes/no" in out and "how many" in out


@pytest.mark.parametrize(("edit", "message"), [
    (lambda q, a, r: r.pop(), "has no answer for 1 annotated question"),
    (lambda q, a, r: r.append({"question_id": 99999, "answer": "x"}), "question_id 99999 (entry 20) is not an annotated"),
    (lambda q, a, r: r.append({"question_id": 1000}), "entry 20 needs question_id and a string answer"),
    (lambda q, a, r: q["questions"].pop(0), "question_id 1000 (entry 0) is not in the questions file"),
    (lambda q, a, r: a["annotations"][3].pop("answers"), "entry 3 needs question_id"),
])
def test_cli_errors_name_the_entry(tmp_path, capsys, edit, message):
    questions, annotations, results = random_files(3, n=20)
    results.sort(key=lambda r: r["question_id"])
    edit(questions, annotations, results)
    code, out, err = run_score_cli(write_files(tmp_path, questions, annotations, results), capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_cli_missing_file(tmp_path, capsys):
    code, _, err = run_score_cli(["vqa", "--questions", "nope.json", "--annotations", "a", "--results", "r"], capsys)
    assert code == 2 and "questions file 'nope.json' not found" in err and "VQA questions json" in err
