"""All caption scores in one call, and the COCO files they are usually read from.

`score_captions` does what pycocoevalcap's COCOEvalCap.evaluate does (PTB-tokenize
the references and the candidates separately, then BLEU-1..4, METEOR, ROUGE-L and
CIDEr-D over the same images), with the n-grams counted once for BLEU and CIDEr.
SPICE is not computed (it needs Stanford CoreNLP models that are a download).
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import NamedTuple

from cvtrain.errors import UserError
from cvtrain.metrics.jsonfiles import read_json
from cvtrain.metrics.captioning import meteor as meteor_module
from cvtrain.metrics.captioning.bleu import bleu_from_corpus
from cvtrain.metrics.captioning.cider import cider_from_corpus
from cvtrain.metrics.captioning.ngrams import Corpus, without_gc
from cvtrain.metrics.captioning.rouge import compute_rouge
from cvtrain.metrics.captioning.tokenize import ptb_tokenize


@without_gc
def score_captions(
    gts: Mapping[Hashable, list[str]],
    res: Mapping[Hashable, list[str]],
    *,
    tokenize: bool = True,
    meteor: bool = True,
    tokenizer: str = "python",
) -> dict[str, float]:
    """BLEU-1..4, METEOR (when Java can run it), ROUGE-L and CIDEr-D of `res` against `gts`.

    `gts` maps an image id to its reference captions, `res` the same ids to a list of one
    candidate caption. With `tokenize` the captions are PTB-tokenized first, as the COCO
    evaluation does (pass False for captions already tokenized that way). Where METEOR
    cannot run, one line on stderr says why and the key is left out.
    """
    _check_inputs(gts, res)
    if tokenize:
        gts, res = ptb_tokenize(gts, tokenizer), ptb_tokenize(res, tokenizer)
    corpus = Corpus(gts, res)  # n-grams counted once, for BLEU and CIDEr
    bleu, _ = bleu_from_corpus(corpus)
    scores = {f"bleu{k + 1}": value for k, value in enumerate(bleu)}
    if meteor:
        available, why = meteor_module.available()
        if available:
            scores["meteor"] = meteor_module.compute_meteor(gts, res)[0]
        else:
            print(f"METEOR skipped: {why}", file=sys.stderr)
    scores["rouge_l"] = compute_rouge(gts, res)[0]
    scores["cider"] = cider_from_corpus(corpus)[0]
    return scores


def _check_inputs(gts: Mapping, res: Mapping) -> None:
    """The pairing pycocoevalcap asserts, as one-line errors."""
    if not gts:
        raise UserError("no images to score: the references are empty.")
    if gts.keys() != res.keys():
        missing = [k for k in gts if k not in res]
        extra = [k for k in res if k not in gts]
        raise UserError(
            f"references and candidates cover different images ({len(missing)} without a candidate, e.g. "
            f"{missing[:3]}; {len(extra)} without references, e.g. {extra[:3]}); score the same image ids."
        )
    for key, caps in res.items():
        if not isinstance(caps, list) or len(caps) != 1 or not isinstance(caps[0], str):
            raise UserError(f"image {key!r}: expected exactly one candidate caption (a list of one string).")
    for key, caps in gts.items():
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
            raise UserError(f"image {key!r}: expected a non-empty list of reference captions (strings).")


class CocoCaptions(NamedTuple):
    """References and candidates of the images that have a result, ready for `score_captions`."""

    gts: dict
    res: dict
    annotated_images: int  # images with reference captions in the annotations file


def load_coco_files(gt_path: str | Path, results_path: str | Path) -> CocoCaptions:
    """Read COCO caption annotations and a results file (a list of {image_id, caption}).

    As the COCO caption evaluation does with `params['image_id'] = cocoRes.getImgIds()`,
    the images scored are those with a result, in the annotations' order; a result for
    an image without references, or two results for one image, is an error.
    """
    gt = read_json(gt_path, "annotations", "--gt")
    results = read_json(results_path, "results", "--results")
    refs = _references(gt, gt_path)
    candidates = _candidates(results, results_path)
    unknown = [image for image in candidates if image not in refs]
    if unknown:
        raise UserError(
            f"{results_path}: {len(unknown)} result image id(s) are not in the annotations {gt_path} "
            f"(e.g. {unknown[:3]}); score results against the annotations of the same split."
        )
    gts = {image: caps for image, caps in refs.items() if image in candidates}
    res = {image: [candidates[image]] for image in gts}
    return CocoCaptions(gts, res, len(refs))



def _references(gt, path) -> dict:
    """image id -> reference captions, images in the order of gt['images'] (then of the annotations)."""
    if not isinstance(gt, dict) or not isinstance(gt.get("annotations"), list):
        raise UserError(
            f"{path}: not COCO caption annotations (expected an object with an 'annotations' list); "
            "pass e.g. captions_val2014.json with --gt."
        )
    refs: dict = {image["id"]: [] for image in gt.get("images") or [] if isinstance(image, dict) and "id" in image}
    for i, ann in enumerate(gt["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or not isinstance(ann.get("caption"), str):
            raise UserError(
                f"{path}: annotation #{i} has no image_id or no caption string; "
                "pass caption annotations (not instances or keypoints)."
            )
        refs.setdefault(ann["image_id"], []).append(ann["caption"])
    return {image: caps for image, caps in refs.items() if caps}


def _candidates(results, path) -> dict:
    """image id -> the result caption, refusing duplicates."""
    if not isinstance(results, list):
        raise UserError(f'{path}: expected a JSON list of {{"image_id": ..., "caption": ...}} results.')
    candidates: dict = {}
    for i, result in enumerate(results):
        if not isinstance(result, dict) or "image_id" not in result or not isinstance(result.get("caption"), str):
            raise UserError(f"{path}: result #{i} has no image_id or no caption string; write one object per image.")
        image = result["image_id"]
        if image in candidates:
            raise UserError(f"{path}: image {image!r} has more than one result; keep one caption per image.")
        candidates[image] = result["caption"]
    return candidates
