"""Text about a scene: captions and VQA questions with ten answers (situations: situations.py).

Every sentence is built from the scene's own objects, so it is true by construction;
the grammar varies word order, synonyms, counts and optional attributes so that five
captions of one image differ (BLEU and CIDEr need several distinct references).
Output is lowercase, words separated by single spaces; ',' ':' '?' are tokens of
their own. All choices come from the rng passed in, so text is deterministic per sample.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np

from .scene import Obj, Scene, choose, relation
from .spec import COLOURS, SHAPES

NUM_CAPTIONS = 5
NUM_ANSWERS = 10

SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little"),
    "medium": ("medium",),
    "large": ("large", "big"),
}
PLURALS: dict[str, str] = {shape: shape + "s" for shape in SHAPES}
# word -> shape, for singular and plural: lets tests (and users) map words back.
SHAPE_WORDS: dict[str, str] = {s: s for s in SHAPES} | {p: s for s, p in PLURALS.items()}
COLOUR_WORDS: frozenset[str] = frozenset(COLOURS)
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight")
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "gradient": ("gradient", "shaded"),
    "noise": ("noisy", "grainy"),
}
# Plausible wrong answers, to mimic VQA annotators' disagreement.
COLOUR_CONFUSIONS: dict[str, tuple[str, ...]] = {
    "red": ("orange", "pink"),
    "green": ("lime", "cyan"),
    "blue": ("purple", "cyan"),
    "yellow": ("gold", "orange"),
    "purple": ("violet", "blue"),
    "orange": ("red", "yellow"),
    "cyan": ("turquoise", "blue"),
    "white": ("gray", "grey"),
}
SHAPE_CONFUSIONS: dict[str, tuple[str, ...]] = {
    "circle": ("hexagon", "oval"),
    "square": ("diamond", "rectangle"),
    "triangle": ("star",),
    "star": ("triangle",),
    "hexagon": ("circle", "octagon"),
    "diamond": ("square",),
}
DISAGREEMENT_RATE = 0.3  # share of questions whose ten answers are not unanimous


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _number(n: int) -> str:
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)


def _clean(text: str) -> str:
    return " ".join(text.split())


def _describe(obj: Obj, rng: np.random.Generator, size_p: float = 0.5, colour_p: float = 0.7) -> str:
    """'big red circle', 'circle', ... : optional size and colour, random synonyms."""
    words = []
    if rng.random() < size_p:
        words.append(choose(rng, SIZE_WORDS[obj.size]))
    if rng.random() < colour_p:
        words.append(obj.colour)
    return " ".join(words + [obj.shape])


def _join(parts: list[str]) -> str:
    """'x', 'x and y', 'x , y and z'."""
    if len(parts) == 1:
        return parts[0]
    return " , ".join(parts[:-1]) + " and " + parts[-1]


def _background_word(scene: Scene, rng: np.random.Generator) -> str:
    words = BACKGROUND_WORDS.get(scene.background, (scene.background_params["tone"], "plain"))
    return choose(rng, words)


def _counted(counts: Counter, noun: Callable[[str], str]) -> str:
    """'two circles and a star' from Counter({'circle': 2, 'star': 1})."""
    return _join([_a(noun(k)) if n == 1 else f"{_number(n)} {noun(k)}s" for k, n in counts.items()])


# --- captions: each template returns a true sentence, or None if it does not apply ---


def _cap_relation(scene: Scene, rng: np.random.Generator) -> str | None:
    if scene.relation is None:
        return None
    a, b, rel = scene.objects[0], scene.objects[1], scene.relation
    if rng.random() < 0.5:
        a, b, rel = b, a, INVERSE[rel]
    text = f"{_a(_describe(a, rng))} {choose(rng, RELATION_WORDS[rel])} {_a(_describe(b, rng))}"
    return ("there is " + text) if rng.random() < 0.3 else text


def _cap_listing(scene: Scene, rng: np.random.Generator) -> str:
    n = len(scene.objects)
    if n == 1:
        head = choose(rng, ("there is one shape :", "one shape :", "a single shape :"))
    else:
        noun = choose(rng, ("shapes", "objects"))
        head = choose(rng, (f"there are {_number(n)} {noun} :", f"{_number(n)} {noun} :"))
    items = [_a(_describe(o, rng, size_p=0.3, colour_p=0.9)) for o in scene.objects]
    return f"{head} {_join(items)}"


def _cap_background(scene: Scene, rng: np.random.Generator) -> str:
    n = len(scene.objects)
    if n == 1 or rng.random() < 0.5:
        subject = _a(_describe(scene.main, rng, size_p=0.6))
    else:
        subject = f"{_number(n)} {choose(rng, ('shapes', 'objects'))}"
    where = choose(rng, ("on", "against", "in front of"))
    return f"{subject} {where} {_a(_background_word(scene, rng))} background"


def _cap_counts(scene: Scene, rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        body = _counted(Counter(o.shape for o in scene.objects), lambda s: s)
    else:  # by colour: 'two red shapes and a blue shape'
        noun = choose(rng, ("shape", "object"))
        body = _counted(Counter(o.colour for o in scene.objects), lambda c: f"{c} {noun}")
    return _clean(f"{choose(rng, ('an image of', 'a picture of', 'a scene with', ''))} {body}")


def _cap_largest(scene: Scene, rng: np.random.Generator) -> str:
    others = len(scene.objects) - 1
    if others and rng.random() < 0.5:
        kind = choose(rng, ("smaller", "other"))
        tail = f"{_number(others)} {kind} {'shape' if others == 1 else 'shapes'}"
        return f"{_a(_describe(scene.main, rng))} {choose(rng, ('with', 'and'))} {tail}"
    superlative = choose(rng, ("largest", "biggest"))
    noun = choose(rng, ("shape", "object"))
    return f"the {superlative} {noun} is {_a(_describe(scene.main, rng, size_p=0.0, colour_p=0.8))}"


CAPTION_TEMPLATES = (_cap_relation, _cap_listing, _cap_background, _cap_counts, _cap_largest)


def _fallback_captions(scene: Scene) -> list[str]:
    """Distinct sentences enumerated without randomness, should sampling repeat itself."""
    main, out = scene.main, []
    for where in ("on", "against", "in front of"):
        for words in (main.shape, f"{main.colour} {main.shape}", f"{main.size} {main.colour} {main.shape}"):
            out.append(f"{_a(words)} {where} a background")
    return out


def captions(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Five distinct true captions of the scene: one of each kind first (relation,
    listing, background, counts, largest), as five annotators who each describe the
    scene their own way; a kind that does not apply (a relation needs two shapes) is
    replaced by another sentence of a random kind."""
    found: list[str] = []
    for template in CAPTION_TEMPLATES:
        text = template(scene, rng)
        if text and text not in found:
            found.append(text)
    for _ in range(60):
        if len(found) == NUM_CAPTIONS:
            return found
        text = choose(rng, CAPTION_TEMPLATES)(scene, rng)
        if text and text not in found:
            found.append(text)
    found += [t for t in _fallback_captions(scene) if t not in found]
    return found[:NUM_CAPTIONS]


# --- detailed captions: every object with its size, colour and shape -----------------
#
# The five captions above describe a scene the way annotators asked for "a caption" do:
# each mentions one or two properties, so many scenes fit one caption ("a picture of a
# blue shape"). Retrieval asks a caption to find the one scene it was written for, as a
# COCO caption mostly does; these captions name every object in full, in varied order
# and phrasing, so that (almost) only their own scene fits.


def _full(obj: Obj, rng: np.random.Generator) -> str:
    """'a big red circle': size (a random synonym), colour and shape, always."""
    return _a(f"{choose(rng, SIZE_WORDS[obj.size])} {obj.colour} {obj.shape}")


def _shuffled(objects: list[Obj], rng: np.random.Generator) -> list[Obj]:
    return [objects[i] for i in np.argsort(rng.random(len(objects)), kind="stable")]


def _detail_listing(objects: list[Obj], rng: np.random.Generator) -> str:
    n, items = len(objects), _join([_full(o, rng) for o in _shuffled(objects, rng)])
    if n == 1:
        return f"{choose(rng, ('one shape :', 'a single shape :', 'an image of'))} {items}"
    noun = choose(rng, ("shapes", "objects"))
    return f"{choose(rng, (f'there are {_number(n)} {noun} :', f'{_number(n)} {noun} :'))} {items}"


def _detail_relation(objects: list[Obj], rng: np.random.Generator) -> str:
    """'a big red circle above a small blue square , with a green star' (main vs second)."""
    if len(objects) == 1:
        return f"{_full(objects[0], rng)} {choose(rng, ('alone', 'on its own', 'and nothing else'))}"
    a, b = objects[0], objects[1]
    rel = relation(a, b)
    if rng.random() < 0.5:
        a, b, rel = b, a, INVERSE[rel]
    text = f"{_full(a, rng)} {choose(rng, RELATION_WORDS[rel])} {_full(b, rng)}"
    if len(objects) > 2:
        rest = _join([_full(o, rng) for o in _shuffled(objects[2:], rng)])
        text += f" , {choose(rng, ('with', 'and', 'along with'))} {rest}"
    return text


def _detail_around(objects: list[Obj], rng: np.random.Generator) -> str:
    """'a small blue square left of a big red circle and a green star above it'."""
    main, others = objects[0], _shuffled(objects[1:], rng)
    if not others:
        return f"{choose(rng, ('just', 'only'))} {_full(main, rng)}"
    first = f"{_full(others[0], rng)} {choose(rng, RELATION_WORDS[relation(others[0], main)])} {_full(main, rng)}"
    rest = [f"{_full(o, rng)} {choose(rng, RELATION_WORDS[relation(o, main)])} it" for o in others[1:]]
    return _join([first] + rest)


def _detail_largest(objects: list[Obj], rng: np.random.Generator) -> str:
    head = f"the {choose(rng, ('largest', 'biggest'))} {choose(rng, ('shape', 'object'))} is {_full(objects[0], rng)}"
    if len(objects) == 1:
        return head
    rest = _join([_full(o, rng) for o in _shuffled(objects[1:], rng)])
    return f"{head} , {choose(rng, ('next to', 'with', 'beside'))} {rest}"


def _detail_picture(objects: list[Obj], rng: np.random.Generator) -> str:
    items = _join([_full(o, rng) for o in _shuffled(objects, rng)])
    return f"{choose(rng, ('an image of', 'a picture of', 'a scene with', 'a photo of'))} {items}"


DETAILED_TEMPLATES = (_detail_relation, _detail_listing, _detail_around, _detail_largest, _detail_picture)


def detailed_captions(objects: list[Obj], rng: np.random.Generator) -> list[str]:
    """Five distinct true captions that each name every object (size, colour, shape),
    one of each kind, then random kinds should two coincide (a lone shape leaves
    little to vary)."""
    found: list[str] = []
    for template in DETAILED_TEMPLATES:
        text = template(objects, rng)
        if text not in found:
            found.append(text)
    for _ in range(60):
        if len(found) == NUM_CAPTIONS:
            break
        text = choose(rng, DETAILED_TEMPLATES)(objects, rng)
        if text not in found:
            found.append(text)
    return found[:NUM_CAPTIONS]


# --- questions ---------------------------------------------------------------------

_REFERENCES = (("shape",), ("colour", "shape"), ("size", "shape"), ("size", "colour", "shape"),
               ("colour",), ("size",), ("size", "colour"))


def _refer(obj: Obj, scene: Scene, without: str) -> str | None:
    """Shortest description that picks out obj alone, not using attribute `without`:
    'square', 'red square', 'large object'. None if no description is unique."""
    for attrs in _REFERENCES:
        if without in attrs:
            continue
        matches = [o for o in scene.objects if all(getattr(o, a) == getattr(obj, a) for a in attrs)]
        if len(matches) == 1:
            words = [getattr(obj, a) for a in attrs]
            return " ".join(words if "shape" in attrs else words + ["object"])
    return None


def _answers(answer: str, alternatives: tuple[str, ...], rng: np.random.Generator) -> list[str]:
    """Ten answers: the true one, except that sometimes 1-3 annotators (never a
    majority) give a plausible alternative."""
    answers = [answer] * NUM_ANSWERS
    if alternatives and rng.random() < DISAGREEMENT_RATE:
        wrong = 1 + int(rng.random() * 3)
        for i in np.argsort(rng.random(NUM_ANSWERS), kind="stable")[:wrong]:
            answers[i] = choose(rng, alternatives)
    return answers


def _count_alternatives(n: int) -> tuple[str, ...]:
    return (str(n + 1),) + ((str(n - 1),) if n > 0 else ())


def _q_count(scene: Scene, rng: np.random.Generator) -> tuple[str, str, tuple]:
    objs, r = scene.objects, rng.random()
    if r < 0.5:
        text = choose(rng, ("how many shapes are there ?", "how many objects are there ?",
                           "how many shapes are in the image ?"))
        n = len(objs)
    elif r < 0.75:
        shape = choose(rng, objs).shape if rng.random() < 0.7 else choose(rng, SHAPES)
        text, n = f"how many {PLURALS[shape]} are there ?", sum(o.shape == shape for o in objs)
    else:
        colour = choose(rng, objs).colour if rng.random() < 0.7 else choose(rng, list(COLOURS))
        text, n = f"how many {colour} shapes are there ?", sum(o.colour == colour for o in objs)
    return text, str(n), _count_alternatives(n)


def _q_colour(scene: Scene, rng: np.random.Generator) -> tuple[str, str, tuple]:
    candidates = [(o, ref) for o in scene.objects if (ref := _refer(o, scene, without="colour"))]
    obj, ref = choose(rng, candidates)  # the main object always qualifies: 'large <shape>'
    text = choose(rng, (f"what color is the {ref} ?", f"what is the color of the {ref} ?"))
    return text, obj.colour, COLOUR_CONFUSIONS[obj.colour]


def _q_exists(scene: Scene, rng: np.random.Generator) -> tuple[str, str, tuple]:
    with_colour = rng.random() < 0.5
    present = {(o.colour if with_colour else "", o.shape) for o in scene.objects}
    target = choose(rng, sorted(present))
    if rng.random() < 0.5:  # ask about something absent, if there is anything absent
        absent = [(c if with_colour else "", s) for c in COLOURS for s in SHAPES]
        absent = sorted(set(absent) - present)
        target = choose(rng, absent) if absent else target
    answer = "yes" if target in present else "no"
    text = f"is there {_a(_clean(' '.join(target)))} ?"
    return text, answer, ("no" if answer == "yes" else "yes",)


def _q_shape(scene: Scene, rng: np.random.Generator) -> tuple[str, str, tuple]:
    candidates = [(o, ref) for o in scene.objects if (ref := _refer(o, scene, without="shape"))]
    obj, ref = choose(rng, candidates)
    if obj is scene.main and rng.random() < 0.5:
        text = f"what is the shape of the {choose(rng, ('largest', 'biggest'))} object ?"
    else:
        text = f"what shape is the {ref} ?"
    return text, obj.shape, SHAPE_CONFUSIONS[obj.shape]


def _q_relation(scene: Scene, rng: np.random.Generator) -> tuple[str, str, tuple] | None:
    a, b = scene.objects[0], scene.objects[1]
    if rng.random() < 0.5:
        a, b = b, a
    rel = relation(a, b)
    ref_a, ref_b = _refer(a, scene, without=""), _refer(b, scene, without="")
    if ref_a is None or ref_b is None:
        return None
    words = choose(rng, RELATION_WORDS[rel][:2])
    only_a = [o for o in scene.objects if o is not b and relation(o, b) == rel] == [a]
    if only_a and rng.random() < 0.5:
        return f"what is {words} the {ref_b} ?", a.shape, SHAPE_CONFUSIONS[a.shape]
    asked = rel if rng.random() < 0.5 else INVERSE[rel]
    answer = "yes" if asked == rel else "no"
    text = f"is the {ref_a} {choose(rng, RELATION_WORDS[asked][:2])} the {ref_b} ?"
    return text, answer, ("no" if answer == "yes" else "yes",)


QUESTION_KINDS = (("count", _q_count), ("color", _q_colour), ("exists", _q_exists),
                  ("shape", _q_shape), ("relation", _q_relation))


def questions(scene: Scene, rng: np.random.Generator) -> list[dict]:
    """One question per kind (the relation one only with two or more objects):
    {"question", "answer" (the true one), "answers" (ten), "type"}."""
    out = []
    for kind, make in QUESTION_KINDS:
        if kind == "relation" and len(scene.objects) < 2:
            continue
        made = make(scene, rng)
        if made is None:
            continue
        text, answer, alternatives = made
        out.append({"question": text, "answer": answer, "answers": _answers(answer, alternatives, rng),
                    "type": kind})
    return out

