"""`cvtrain-score`: score a results file against its annotations, as the reference tools do.

    cvtrain-score captions --gt captions_val2014.json --results results.json [--json]
                           [--no-meteor] [--tokenizer python|java]
    cvtrain-score detection --gt instances_val2017.json --results results.json [--json]
                            [--iou-type bbox|segm] [--backend pycocotools|faster_coco_eval]
                            [--pr-curve pr.png]
    cvtrain-score fid --real A --fake B [--features shapesworld|inception] [--weights FILE]
                      [--json] [--kid-subsets N] [--kid-subset-size M] [--k 3]
    cvtrain-score analogies --vectors FILE --questions FILE [--restrict N] [--json]
                            [--binary | --text] [--case-sensitive]
    cvtrain-score similarity --vectors FILE --pairs FILE [--restrict N] [--json]
                             [--binary | --text] [--case-sensitive] [--delimiter TAB]
    cvtrain-score vqa --questions Q.json --annotations A.json --results R.json [--json]
                      [--per-question-type] [--digits 2]
    cvtrain-score situation --gt dev.json --results R.json [--json]

One subcommand per task, each importing its scorers only when it runs, so `--help` and
argument errors answer at once. A mistake the user can fix (a missing file, bad JSON,
ids that do not match) is one line on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from cvtrain.errors import UserError

CAPTION_LABELS = {
    "bleu1": "BLEU-1",
    "bleu2": "BLEU-2",
    "bleu3": "BLEU-3",
    "bleu4": "BLEU-4",
    "meteor": "METEOR",
    "rouge_l": "ROUGE-L",
    "cider": "CIDEr-D",
}


def main(argv: list[str] | None = None) -> None:
    """Entry point of `cvtrain-score`."""
    args = build_parser().parse_args(argv)
    try:
        args.command(args)
    except UserError as error:
        print(f"cvtrain-score: error: {error}", file=sys.stderr)
        sys.exit(UserError.exit_code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cvtrain-score", description="Score results files with the reference definitions of each metric."
    )
    tasks = parser.add_subparsers(title="tasks", metavar="TASK", required=True)
    captions = tasks.add_parser(
        "captions",
        help="BLEU-1..4, METEOR, ROUGE-L, CIDEr-D as the COCO caption evaluation computes them",
        description="Score COCO-format caption results (a JSON list of {image_id, caption}) against COCO "
        "caption annotations, as pycocoevalcap does: PTB tokenization, then BLEU-1..4, METEOR 1.5 (needs "
        "Java), ROUGE-L and CIDEr-D over the images that have a result.",
    )
    captions.add_argument("--gt", required=True, metavar="ANNOTATIONS.json", help="COCO caption annotations")
    captions.add_argument("--results", required=True, metavar="RESULTS.json", help="[{image_id, caption}, ...]")
    captions.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    captions.add_argument("--no-meteor", action="store_true", help="skip METEOR (no Java start-up)")
    captions.add_argument(
        "--tokenizer",
        choices=("python", "java"),
        default="python",
        help="PTB tokenizer: this package's Python port (default) or Stanford's jar from pycocoevalcap",
    )
    captions.set_defaults(command=score_captions_command)
    add_detection_parser(tasks)
    add_fid_parser(tasks)
    add_word_vector_parsers(tasks)
    add_vqa_parser(tasks)
    add_situation_parser(tasks)
    return parser


def add_vqa_parser(tasks) -> None:
    vqa = tasks.add_parser(
        "vqa",
        help="VQA accuracy, overall and per answer type, as the official VQA evaluation (vqaEval.py)",
        description="Score VQA results (a JSON list of {question_id, answer}) against VQA questions and "
        "annotations as GT-Vision-Lab's vqaEval.py does: the answer normalisation (punctuation, number words, "
        "articles, contractions) and min(1, matches/3) averaged over the ten leave-one-annotator-out subsets. "
        "Prints percentages rounded to --digits, exactly VQAEval(n=digits).accuracy; the results must answer "
        "every annotated question.",
    )
    vqa.add_argument("--questions", required=True, metavar="Q.json", help="VQA questions json")
    vqa.add_argument("--annotations", required=True, metavar="A.json", help="VQA annotations json")
    vqa.add_argument("--results", required=True, metavar="R.json", help="[{question_id, answer}, ...]")
    vqa.add_argument("--json", action="store_true",
                     help="print one JSON object: overall and one key per answer type")
    vqa.add_argument("--per-question-type", action="store_true", help="also report each question type")
    vqa.add_argument("--digits", type=int, default=2, help="decimals of the percentages (the official n, 2)")
    vqa.set_defaults(command=score_vqa_command)


def add_situation_parser(tasks) -> None:
    situation = tasks.add_parser(
        "situation",
        help="imSitu verb, value and value-all at top-1, top-5 and with the ground-truth verb",
        description="Score situation results against an imSitu json (dev.json, test.json) as the official "
        "imSitu evaluation (imSituTensorEvaluation) does: per-verb averages of verb, value and value-all at "
        "top-1 and top-5 predicted verbs and with the ground-truth verb (value*, value-all*), and their mean. "
        "Results map each image to its ranked verbs, best first, each with a frame "
        "[{\"verb\": V, \"frame\": {ROLE: NOUN}}, ...]: at least the top 5, plus the frame the model gives "
        "the ground-truth verb when it is not among them (an image without it matches no role).",
    )
    situation.add_argument("--gt", required=True, metavar="G.json", help="imSitu json: {image: {verb, frames}}")
    situation.add_argument("--results", required=True, metavar="R.json",
                           help="{image: [{verb, frame: {role: noun}}, ...]}, best verb first")
    situation.add_argument("--json", action="store_true", help="print the scores (fractions) as one JSON object")
    situation.set_defaults(command=score_situation_command)


def score_vqa_command(args: argparse.Namespace) -> None:
    from cvtrain.metrics.vqa import load_vqa_files, score_vqa

    questions, predictions = load_vqa_files(args.questions, args.annotations, args.results)
    official = score_vqa(questions, predictions).official(args.digits)
    flat = {"overall": official["overall"], **official["perAnswerType"]}
    if args.per_question_type:
        flat["per_question_type"] = official["perQuestionType"]
    if args.json:
        print(json.dumps(flat))
        return
    print(f"{'questions':16s} {len(questions)}")
    print(f"{'overall':16s} {official['overall']}")
    for kind, value in official["perAnswerType"].items():
        print(f"{'  ' + kind:16s} {value}")
    if args.per_question_type:
        print("per question type:")
        for kind, value in official["perQuestionType"].items():
            print(f"  {kind:30s} {value}")


def score_situation_command(args: argparse.Namespace) -> None:
    from cvtrain.metrics.situation import LABELS, load_situation_files, score_situations

    gt, results, without = load_situation_files(args.gt, args.results)
    if without:
        print(f"note: {without} of {len(gt)} images have no frame for their ground-truth verb; value* and "
              "value-all* count them as wrong", file=sys.stderr)
    scores = score_situations(gt, results)
    if args.json:
        print(json.dumps(scores))
        return
    print(f"{'images':28s} {len(gt)}")
    for key, value in scores.items():
        print(f"{LABELS[key]:28s} {value:.6f}")


def add_detection_parser(tasks) -> None:
    detection = tasks.add_parser(
        "detection",
        help="COCO AP / AR (the 12 COCOeval stats) of boxes or masks",
        description="Score COCO-format detection results (a JSON list of {image_id, category_id, bbox or "
        "segmentation, score}) against COCO instance annotations with COCOeval: AP at IoU .50:.95, .50, "
        ".75, AP small/medium/large, AR at 1/10/100 detections, AR small/medium/large.",
    )
    detection.add_argument("--gt", required=True, metavar="ANNOTATIONS.json", help="COCO instance annotations")
    detection.add_argument("--results", required=True, metavar="RESULTS.json", help="COCO-format detections")
    detection.add_argument("--iou-type", choices=("bbox", "segm"), default="bbox", help="boxes (default) or masks")
    detection.add_argument(
        "--backend",
        choices=("pycocotools", "faster_coco_eval"),
        default="pycocotools",
        help="the reference COCOeval (default) or faster-coco-eval's C++ port (same numbers, faster)",
    )
    detection.add_argument("--json", action="store_true", help="print the stats as one JSON object")
    detection.add_argument("--pr-curve", metavar="FILE.png", help="also save the IoU=0.50 precision-recall curve")
    detection.set_defaults(command=score_detection_command)


def add_fid_parser(tasks) -> None:
    fid = tasks.add_parser(
        "fid",
        help="FID, KID and improved precision / recall of generated images against real ones",
        description="Compare generated images with real ones in a feature space: FID (as pytorch-fid), KID "
        "(as torch-fidelity) and improved precision / recall (Kynkaanniemi et al. 2019). --real and --fake "
        "are each an image folder, an .npz of features (key 'features', N x D) or an .npz of pytorch-fid "
        "statistics (keys 'mu', 'sigma': then only FID can be computed).",
    )
    fid.add_argument("--real", required=True, metavar="A", help="image folder, features .npz or statistics .npz")
    fid.add_argument("--fake", required=True, metavar="B", help="image folder, features .npz or statistics .npz")
    fid.add_argument(
        "--features",
        choices=("shapesworld", "inception"),
        help="feature network for image folders: inception (pytorch-fid's, needs --weights; the default when "
        "--weights is given) or shapesworld (a small CNN trained once on ShapesWorld and cached; otherwise)",
    )
    fid.add_argument(
        "--weights", metavar="FILE", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth"
    )
    fid.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    fid.add_argument("--kid-subsets", type=int, default=100, metavar="N", help="KID subsets (default 100)")
    fid.add_argument("--kid-subset-size", type=int, default=1000, metavar="M",
                     help="KID subset size, capped at the number of samples (default 1000)")
    fid.add_argument("--k", type=int, default=3, help="neighbours for precision / recall radii (default 3)")
    fid.set_defaults(command=score_fid_command)


VECTORS_HELP = (
    "The vectors file is in word2vec format, as gensim's KeyedVectors.save_word2vec_format and the C word2vec "
    "tool write it: a 'COUNT DIM' header line, then one word and its vector per record, most frequent word "
    "first. Text or binary is detected from the first record (--binary / --text force it). As gensim does, "
    "only the first --restrict words are used, and words are compared upper-cased (--case-sensitive: as "
    "written)."
)


def add_word_vector_parsers(tasks) -> None:
    analogies = tasks.add_parser(
        "analogies",
        help="word2vec analogy accuracy (3CosAdd), per section, as gensim's evaluate_word_analogies",
        description="Answer each question 'a b c d' of a questions-words file (': section' lines, then four "
        "words per line) with the word closest to b - a + c, leaving out a, b and c, exactly as gensim's "
        "KeyedVectors.evaluate_word_analogies; questions with a word outside the vocabulary are skipped and "
        "counted. " + VECTORS_HELP,
    )
    analogies.add_argument("--questions", required=True, metavar="FILE", help="questions-words file")
    add_vectors_arguments(analogies)
    analogies.set_defaults(command=score_analogies_command)
    similarity = tasks.add_parser(
        "similarity",
        help="word-similarity Pearson / Spearman (WordSim353 format), as gensim's evaluate_word_pairs",
        description="Correlate the cosine of each word pair with its human score, as gensim's "
        "KeyedVectors.evaluate_word_pairs: lines 'word1 TAB word2 TAB score', '#' lines are comments; pairs "
        "with a word outside the vocabulary are skipped and reported as a percentage. " + VECTORS_HELP,
    )
    similarity.add_argument("--pairs", required=True, metavar="FILE", help="word pairs file (e.g. wordsim353.tsv)")
    similarity.add_argument("--delimiter", default="\t", type=delimiter,
                            help="field separator (default: tab; '\\t' is read as a tab too)")
    add_vectors_arguments(similarity)
    similarity.set_defaults(command=score_similarity_command)


def delimiter(text: str) -> str:
    """A shell hands over a typed \\t as backslash + t: read it as the tab it means."""
    return "\t" if text == "\\t" else text


def add_vectors_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vectors", required=True, metavar="FILE", help="word2vec-format vectors, text or binary")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--binary", dest="binary", action="store_const", const=True, help="the vectors file is binary")
    form.add_argument("--text", dest="binary", action="store_const", const=False, help="the vectors file is text")
    parser.add_argument("--restrict", type=int, default=300000, metavar="N",
                        help="use only the first N (most frequent) words (default 300000, as gensim)")
    parser.add_argument("--case-sensitive", action="store_true", help="compare words as written, not upper-cased")
    parser.add_argument("--json", action="store_true", help="print the scores as one JSON object")


def score_analogies_command(args: argparse.Namespace) -> None:
    from cvtrain.metrics.embeddings.scoring import analogy_json, analogy_lines, score_analogies

    result, notes = score_analogies(args.vectors, args.questions, args.restrict, args.binary,
                                    case_insensitive=not args.case_sensitive)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    lines = [json.dumps(analogy_json(result, args.restrict))] if args.json else analogy_lines(result)
    print("\n".join(lines))


def score_similarity_command(args: argparse.Namespace) -> None:
    from cvtrain.metrics.embeddings.scoring import score_similarity, similarity_json, similarity_lines

    result, notes = score_similarity(args.vectors, args.pairs, args.restrict, args.binary,
                                     case_insensitive=not args.case_sensitive, delimiter=args.delimiter)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print("\n".join([json.dumps(similarity_json(result))] if args.json else similarity_lines(result)))


def score_fid_command(args: argparse.Namespace) -> None:
    from cvtrain.metrics.generative.scoring import format_scores, score_paths

    scores, notes = score_paths(
        args.real, args.fake, features=args.features, weights=args.weights,
        kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size, k=args.k,
    )
    if args.json:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        print(json.dumps(scores))
        return
    for line in format_scores(scores, notes):
        print(line)


def score_captions_command(args: argparse.Namespace) -> None:
    from cvtrain.metrics.captioning import load_coco_files, score_captions

    data = load_coco_files(args.gt, args.results)
    if len(data.gts) < data.annotated_images:
        print(
            f"note: scoring the {len(data.gts)} images that have a result, of {data.annotated_images} annotated",
            file=sys.stderr,
        )
    scores = score_captions(data.gts, data.res, meteor=not args.no_meteor, tokenizer=args.tokenizer)
    if args.json:
        print(json.dumps(scores))
        return
    print(f"{'images':10s} {len(data.gts)}")
    for key, value in scores.items():
        print(f"{CAPTION_LABELS.get(key, key):10s} {value:.6f}")


def score_detection_command(args: argparse.Namespace) -> None:
    from cvtrain.metrics.detection import STAT_LABELS, coco_evaluation, save_pr_curve

    evaluation = coco_evaluation(args.gt, args.results, args.iou_type, args.backend)
    if args.pr_curve:
        recall, precision = evaluation.pr_curve(0.5)
        save_pr_curve(recall, precision, args.pr_curve, label="IoU=0.50", title=f"{args.iou_type} precision-recall")
    if args.json:
        print(json.dumps(evaluation.stats))
        return
    for key, value in evaluation.stats.items():
        print(f"{key:11s} {value:.6f}  {STAT_LABELS[key]}")


if __name__ == "__main__":
    main()
