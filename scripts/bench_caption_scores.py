"""Time pycocoevalcap's BLEU + ROUGE-L + CIDEr-D against cvtrain's on the same captions.

Generates 5,000 images x 5 references + 1 candidate: already-tokenized captions of
about ten words from a small grammar (a scene per image: subject, action, object,
place; each caption words it differently), runs both implementations in this one
process, prints both times and the ratio, and checks that every score agrees.

    python scripts/bench_caption_scores.py [--images 5000] [--refs 5] [--seed 0] [--repeat 3]

Exit status 1 if a score differs by more than 1e-9 or we are not 5x faster.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

SUBJECTS = (
    "man woman boy girl child dog cat person player skier surfer rider chef cow horse giraffe elephant zebra bird"
).split()
ADJECTIVES = "young old small large little big white black brown red blue green yellow tall cute happy".split()
ACTIONS = (
    "riding holding eating playing standing sitting walking running throwing catching carrying looking "
    "laying flying skiing surfing cutting jumping"
).split()
OBJECTS = (
    "frisbee kite skateboard surfboard bike horse pizza sandwich umbrella ball bat racket phone laptop "
    "cake banana bowl plate book bag"
).split()
PLACES = "beach park street field kitchen table room road grass snow water track court city yard".split()
ARTICLES = ["a", "the", "one"]
PREPOSITIONS = ["on", "in", "at", "near", "by", "down", "across"]


def scene(rng: random.Random) -> tuple[str, str, str, str]:
    return rng.choice(SUBJECTS), rng.choice(ACTIONS), rng.choice(OBJECTS), rng.choice(PLACES)


def caption(rng: random.Random, image: tuple[str, str, str, str], noise: float = 0.2) -> str:
    """About ten words describing `image`, each part sometimes replaced or embellished."""
    subject, action, obj, place = (
        rng.choice(pool) if rng.random() < noise else word
        for word, pool in zip(image, (SUBJECTS, ACTIONS, OBJECTS, PLACES))
    )
    words = [rng.choice(ARTICLES)]
    if rng.random() < 0.5:
        words.append(rng.choice(ADJECTIVES))
    words += [subject, "is"] if rng.random() < 0.3 else [subject]
    words += [action, rng.choice(ARTICLES)]
    if rng.random() < 0.3:
        words.append(rng.choice(ADJECTIVES))
    words += [obj, rng.choice(PREPOSITIONS), "the", place]
    if rng.random() < 0.2:
        words += ["with", rng.choice(ARTICLES), rng.choice(OBJECTS)]
    return " ".join(words)


def make_data(images: int, refs: int, seed: int) -> tuple[dict, dict]:
    rng = random.Random(seed)
    gts, res = {}, {}
    for image_id in range(images):
        image = scene(rng)
        gts[image_id] = [caption(rng, image) for _ in range(refs)]
        res[image_id] = [caption(rng, image, noise=0.35)]
    return gts, res


def run_reference(gts: dict, res: dict) -> dict[str, float]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {**{f"bleu{k + 1}": float(b) for k, b in enumerate(bleu)}, "rouge_l": float(rouge), "cider": float(cider)}


def run_ours(gts: dict, res: dict) -> dict[str, float]:
    from cvtrain.metrics.captioning import score_captions

    return score_captions(gts, res, tokenize=False, meteor=False)


def best_time(fn, gts: dict, res: dict, repeat: int) -> tuple[float, dict[str, float]]:
    best, scores = float("inf"), {}
    for _ in range(repeat):
        start = time.perf_counter()
        scores = fn(gts, res)
        best = min(best, time.perf_counter() - start)
    return best, scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--refs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="take the best of this many runs of each")
    args = parser.parse_args(argv)
    gts, res = make_data(args.images, args.refs, args.seed)
    print(f"{args.images} images x {args.refs} references + 1 candidate, e.g. {res[0][0]!r}")
    run_ours(gts, res)  # warm-up: imports, regex and table set-up
    ref_time, ref_scores = best_time(run_reference, gts, res, args.repeat)
    our_time, our_scores = best_time(run_ours, gts, res, args.repeat)
    ratio = ref_time / our_time
    print(f"pycocoevalcap (Bleu(4), Rouge(), Cider()): {ref_time:.3f} s")
    print(f"cvtrain (score_captions, tokenize=False):  {our_time:.3f} s")
    print(f"speed-up: {ratio:.1f}x")
    worst = max(abs(ref_scores[k] - our_scores[k]) for k in ref_scores)
    for key in ref_scores:
        print(f"  {key:8s} pycocoevalcap {ref_scores[key]:.12f}  cvtrain {our_scores[key]:.12f}")
    print(f"largest difference: {worst:.2e}")
    ok = worst <= 1e-9 and ratio >= 5
    print("OK" if ok else "FAILED: scores differ or speed-up below 5x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
