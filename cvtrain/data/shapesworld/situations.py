"""imSitu-style situations of a scene: an activity between shapes and who plays which role.

The activity is read off the geometry, so an image shows it: the agent is the main
(largest) shape, the patient the shape nearest to it, the tool the next nearest, and the
verb says where the agent is relative to the patient (above: hovering, below: lifting,
left of: pushing, right of: pulling; alone: resting). The place is the background.
Every verb has a fixed role set, as in imSitu; a role with nobody in it is the empty
noun "", imSitu's convention.

Three annotators each write a frame, as imSitu has three per image. The first is
exact; the others sometimes name a shape by a look-alike ("oval" for a circle) or the
place by a synonym, the way imSitu annotators disagree on nouns but not on the verb.
"""

from __future__ import annotations

import math

import numpy as np

from .scene import Scene, choose, relation

ROLES = ("agent", "patient", "tool", "place")
VERB_ROLES: dict[str, tuple[str, ...]] = {
    "hovering": ROLES, "lifting": ROLES, "pushing": ROLES, "pulling": ROLES, "resting": ("agent", "place"),
}
RELATION_VERBS = {"above": "hovering", "below": "lifting", "left of": "pushing", "right of": "pulling"}
PLACES = {"plain": "plain", "gradient": "gradient", "noise": "noise"}
PLACE_SYNONYMS = {"plain": ("flat",), "gradient": ("shaded",), "noise": ("grainy",)}
SHAPE_LOOKALIKES = {"circle": ("oval",), "square": ("rectangle",), "triangle": ("pyramid",), "star": ("sparkle",),
                    "hexagon": ("octagon",), "diamond": ("rhombus",)}
NUM_FRAMES = 3
VARIATION_RATE = 0.15  # chance that annotator 2 or 3 words one role differently


def true_frame(scene: Scene) -> tuple[str, dict[str, str]]:
    """The verb and the exact frame of a scene."""
    agent = scene.main
    others = sorted(scene.objects[1:], key=lambda o: math.dist(o.centre, agent.centre))
    place = PLACES[scene.background]
    if not others:
        return "resting", {"agent": agent.shape, "place": place}
    verb = RELATION_VERBS[relation(agent, others[0])]
    tool = others[1].shape if len(others) > 1 else ""
    return verb, {"agent": agent.shape, "patient": others[0].shape, "tool": tool, "place": place}


def situation(scene: Scene, rng: np.random.Generator) -> dict:
    """{"verb", "frames": three {role: noun}}; the first frame is exact."""
    verb, frame = true_frame(scene)
    frames = [dict(frame)]
    for _ in range(NUM_FRAMES - 1):
        varied = dict(frame)
        for role, noun in frame.items():
            if rng.random() >= VARIATION_RATE or not noun:
                continue
            options = PLACE_SYNONYMS[noun] if role == "place" else SHAPE_LOOKALIKES[noun]
            varied[role] = choose(rng, options)
        frames.append(varied)
    return {"verb": verb, "frames": frames}
