"""VQA accuracy exactly as the official evaluation computes it (no torch).

Reproduces `VQAEval.evaluate` of GT-Vision-Lab/VQA,
PythonEvaluationTools/vqaEvaluation/vqaEval.py (master, Python 3 version), rule by rule,
because papers report that code's numbers and its quirks change them:

- the predicted answer: newlines and tabs become spaces, it is stripped, then always goes
  through `process_punctuation` and `process_digit_article`;
- the ten ground-truth answers are changed only when they are not all the same string,
  and then only by `process_punctuation` (never digits, articles or contractions: a
  human "two" never matches a predicted "two", which normalises to "2");
- for each ground-truth answer, the others (every answer dict that is != it) are
  compared with the prediction: acc = min(1, matches / 3); the question's accuracy is
  the mean of these ten leave-one-out accuracies;
- overall, per question type and per answer type: the mean over questions, reported by
  the official code as 100 x mean rounded to `n` = 2 digits (`official_rounding`).

`process_punctuation` keeps the official code's exact behaviour: it tests each mark
against the *original* text, a mark followed or preceded by a space (or any text with a
digit-comma-digit) is deleted, otherwise replaced by a space; the period regex deletes a
'.' not followed by a digit, at most 32 times (the code passes re.UNICODE, 32, where
re.sub takes its `count`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
              "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ("a", "an", "the")
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: a lookahead for '<=digit', i.e. always true
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
PUNCT = (";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
PERIOD_COUNT = int(re.UNICODE)  # the official call sub("", text, re.UNICODE) passes 32 as `count`
ANSWERS_PER_QUESTION = 10


def process_punctuation(text: str) -> str:
    """vqaEval.processPunctuation: marks deleted or turned into spaces, periods stripped."""
    out = text
    comma = COMMA_STRIP.search(text) is not None
    for p in PUNCT:
        if (p + " " in text or " " + p in text) or comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, count=PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """vqaEval.processDigitArticle: lower case, number words to digits, articles dropped,
    contractions restored ('dont' -> "don't")."""
    words = [MANUAL_MAP.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def clean_prediction(answer: str) -> str:
    """What the official code compares a predicted answer as."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(answer))


def normalize_answer(answer: str) -> str:
    """The normal form training uses for answer classes: the prediction's normalisation,
    so a class string is scored as itself."""
    return clean_prediction(answer)


def question_accuracy(answers: Sequence[Mapping[str, Any]], predicted: str) -> float:
    """The official accuracy of one prediction against its answer dicts ({"answer", and
    usually "answer_id", "answer_confidence"}): the mean over the answers of
    min(1, #other answers equal to the prediction / 3)."""
    res = clean_prediction(predicted)
    gts = [dict(a) for a in answers]  # the official code edits the annotations in place; we do not
    if len({a["answer"] for a in gts}) > 1:
        for a in gts:
            a["answer"] = process_punctuation(a["answer"])
    accs = []
    for current in gts:
        others = [a for a in gts if a != current]  # dict inequality, as the official code
        matches = sum(a["answer"] == res for a in others)
        accs.append(min(1.0, matches / 3))
    return sum(accs) / len(accs)


@dataclass
class VQAQuestion:
    """One annotated question: its ten answer dicts and its two types."""

    answers: list[dict]
    question_type: str = ""
    answer_type: str = ""


@dataclass
class VQAScores:
    """Mean accuracies (fractions, unrounded) and the per-question ones."""

    overall: float
    per_answer_type: dict[str, float]
    per_question_type: dict[str, float]
    per_question: dict[Any, float] = field(default_factory=dict)

    def official(self, digits: int = 2) -> dict[str, Any]:
        """What VQAEval.accuracy holds: percentages rounded to `digits` (its n)."""
        r = lambda x: round(100 * x, digits)  # noqa: E731
        return {"overall": r(self.overall),
                "perQuestionType": {k: r(v) for k, v in self.per_question_type.items()},
                "perAnswerType": {k: r(v) for k, v in self.per_answer_type.items()}}


def score_vqa(questions: Mapping[Any, VQAQuestion], predictions: Mapping[Any, str]) -> VQAScores:
    """Accuracy of `predictions` (question id -> answer) over every question of
    `questions`, in their order, as VQAEval.evaluate; a question without a prediction is
    a bug of the caller (the official loadRes refuses such results)."""
    per_question: dict[Any, float] = {}
    by_qtype: dict[str, list[float]] = {}
    by_atype: dict[str, list[float]] = {}
    for qid, q in questions.items():
        acc = question_accuracy(q.answers, predictions[qid])
        per_question[qid] = acc
        by_qtype.setdefault(q.question_type, []).append(acc)
        by_atype.setdefault(q.answer_type, []).append(acc)
    if not per_question:
        raise ValueError("no question to score")
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return VQAScores(mean(list(per_question.values())), {k: mean(v) for k, v in by_atype.items()},
                     {k: mean(v) for k, v in by_qtype.items()}, per_question)


def answer_type_of(answer: str) -> str:
    """VQA v2's answer types for data that has none (ShapesWorld): yes/no, number, other."""
    if answer in ("yes", "no"):
        return "yes/no"
    return "number" if answer.isdigit() else "other"


# --- results files (the cvtrain-score vqa command) ----------------------------------


def load_vqa_files(questions_path: str, annotations_path: str, results_path: str
                   ) -> tuple[dict[Any, VQAQuestion], dict[Any, str]]:
    """The annotations (keyed by question id, in the annotation file's order) and the
    predictions of a results file [{question_id, answer}], checked as VQA.loadRes checks
    them: the results must answer exactly the annotated questions."""
    from cvtrain.errors import UserError
    from cvtrain.metrics.jsonfiles import read_json

    qdata = read_json(questions_path, "questions", "--questions", kind="VQA questions json")
    adata = read_json(annotations_path, "annotations", "--annotations", kind="VQA annotations json")
    rdata = read_json(results_path, "results", "--results", kind="VQA results json")
    try:
        asked = {q["question_id"] for q in qdata["questions"]}
    except (KeyError, TypeError):
        raise UserError(f"questions file '{questions_path}' has no questions[question_id]; pass a VQA "
                        "questions json (v2_OpenEnded_mscoco_*_questions.json).") from None
    questions: dict[Any, VQAQuestion] = {}
    if not isinstance(adata, dict) or not isinstance(adata.get("annotations"), list):
        raise UserError(f"annotations file '{annotations_path}' has no annotations list; pass a VQA "
                        "annotations json (v2_mscoco_*_annotations.json).")
    for i, ann in enumerate(adata["annotations"]):
        try:
            qid, answers = ann["question_id"], ann["answers"]
            answer_type, question_type = str(ann["answer_type"]), str(ann["question_type"])
            answers = [dict(a) for a in answers]
            if not answers or not all(isinstance(a.get("answer"), str) for a in answers):
                raise TypeError
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UserError(f"annotations file '{annotations_path}': entry {i} needs question_id, "
                            "question_type, answer_type and answers[answer].") from None
        if qid not in asked:
            raise UserError(f"annotations file '{annotations_path}': question_id {qid} (entry {i}) is not in "
                            f"the questions file '{questions_path}'.")
        questions[qid] = VQAQuestion(answers, question_type, answer_type)
    if not isinstance(rdata, list):
        raise UserError(f"results file '{results_path}' is not a list; it must be [{{question_id, answer}}, ...].")
    predictions: dict[Any, str] = {}
    for i, res in enumerate(rdata):
        if not isinstance(res, dict) or "question_id" not in res or not isinstance(res.get("answer"), str):
            raise UserError(f"results file '{results_path}': entry {i} needs question_id and a string answer.")
        if res["question_id"] not in questions:
            raise UserError(f"results file '{results_path}': question_id {res['question_id']} (entry {i}) is not "
                            "an annotated question; results must answer exactly the annotated questions.")
        predictions[res["question_id"]] = res["answer"]  # a repeated id: the last wins, as loadRes's index
    missing = [qid for qid in questions if qid not in predictions]
    if missing:
        raise UserError(f"results file '{results_path}' has no answer for {len(missing)} annotated question(s), "
                        f"e.g. question_id {missing[0]}; results must answer every annotated question.")
    return questions, predictions
