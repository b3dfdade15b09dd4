"""Scene layout: which shapes, where, on which background. No pixels here.

A scene is drawn from one numpy Generator, so it is a pure function of the seed. The
first object is the main one: always large, drawn last (on top), so it is unoccluded
and the largest visible object; the scene's class label is its shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .spec import BACKGROUND_TONES, BACKGROUNDS, COLOURS, SHAPES, SIZE_JITTER, SIZES, ShapesWorldSpec

MAX_ROTATION = math.radians(15.0)  # small: a rotated square must not become a diamond
PLACEMENT_TRIES = 30
MAX_IOU = 0.2  # boxes of any two objects
MAX_COVER = 0.3  # intersection / smaller box area: keeps every object mostly visible
STAR_INNER = 0.45  # inner/outer radius of the star (0.38 is a regular pentagram; fatter
#                    reads better at 64 px)
DIAMOND_WIDTH = 0.62  # half-width of the diamond for a half-height of 1


def _polygon(radii: list[float], offset_deg: float = 0.0) -> np.ndarray:
    """Vertices (E, 2) at equal angular steps, clockwise from 'up' (image y points down)."""
    step = 360.0 / len(radii)
    angles = [math.radians(offset_deg + k * step) for k in range(len(radii))]
    return np.array([(r * math.sin(a), -r * math.cos(a)) for r, a in zip(radii, angles)])


def _area(vertices: np.ndarray) -> float:
    """Shoelace area of a simple polygon (plain Python sums: no BLAS, same bits everywhere)."""
    pts = vertices.tolist()
    twice = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]))
    return abs(twice) / 2.0


# Unit outlines (circumradius 1); the circle has none and is tested analytically.
UNIT_POLYGONS: dict[str, np.ndarray] = {
    "square": _polygon([1.0] * 4, 45.0),
    "triangle": _polygon([1.0] * 3),
    "star": _polygon([1.0, STAR_INNER] * 5),
    "hexagon": _polygon([1.0] * 6),
    "diamond": _polygon([1.0, DIAMOND_WIDTH] * 2),
}
UNIT_OUTLINES = {name: tuple(map(tuple, v.tolist())) for name, v in UNIT_POLYGONS.items()}
# Circumradius of each shape whose area equals that of the unit circle.
CIRCUMRADIUS: dict[str, float] = {"circle": 1.0} | {
    name: math.sqrt(math.pi / _area(v)) for name, v in UNIT_POLYGONS.items()
}


@dataclass(frozen=True)
class Obj:
    """One shape. centre is (x, y) in pixels (pixel j spans [j, j+1]); radius is the
    circumradius in pixels; angle is the rotation in radians (clockwise)."""

    shape: str
    colour: str
    size: str
    centre: tuple[float, float]
    radius: float
    angle: float = 0.0

    @cached_property
    def outline(self) -> tuple[tuple[float, float], ...] | None:
        """Absolute polygon vertices as (x, y) pairs, or None for the circle. Plain Python
        floats, element by element (no BLAS, whose fused or reordered sums may change the
        last bit between machines), and cached: placement asks for boxes repeatedly."""
        unit = UNIT_OUTLINES.get(self.shape)
        if unit is None:
            return None
        c, s = math.cos(self.angle), math.sin(self.angle)
        (cx, cy), r = self.centre, self.radius
        return tuple(((ux * c - uy * s) * r + cx, (ux * s + uy * c) * r + cy) for ux, uy in unit)

    def vertices(self) -> np.ndarray | None:
        """Absolute polygon vertices (E, 2), or None for the circle."""
        return None if self.outline is None else np.array(self.outline)

    @cached_property
    def bbox(self) -> tuple[float, float, float, float]:
        """Exact geometric xyxy box of the outline (pixels may cover slightly less)."""
        if self.outline is None:
            (x, y), r = self.centre, self.radius
            return (x - r, y - r, x + r, y + r)
        xs, ys = [p[0] for p in self.outline], [p[1] for p in self.outline]
        return (min(xs), min(ys), max(xs), max(ys))

    def to_dict(self) -> dict:
        return {
            "shape": self.shape,
            "colour": self.colour,
            "size": self.size,
            "centre": [float(self.centre[0]), float(self.centre[1])],
            "radius": float(self.radius),
            "angle": float(self.angle),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Obj":
        """The inverse of to_dict (what a cached split stores per object)."""
        return cls(d["shape"], d["colour"], d["size"], tuple(d["centre"]), d["radius"], d["angle"])


@dataclass
class Scene:
    """Background kind + parameters and the objects, main object first."""

    background: str
    background_params: dict = field(default_factory=dict)
    objects: list[Obj] = field(default_factory=list)

    @property
    def main(self) -> Obj:
        return self.objects[0]

    @property
    def relation(self) -> str | None:
        """Where the main object is relative to the second one, or None if alone."""
        if len(self.objects) < 2:
            return None
        return relation(self.objects[0], self.objects[1])

    @property
    def draw_order(self) -> list[int]:
        """Object indices back to front: the main object is drawn last, on top."""
        return list(range(1, len(self.objects))) + [0]


def relation(a: Obj, b: Obj) -> str:
    """'left of' / 'right of' / 'above' / 'below': where a is relative to b, along the
    dominant axis of the centre offset (image y grows downwards)."""
    dx = a.centre[0] - b.centre[0]
    dy = a.centre[1] - b.centre[1]
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def _iou_cover(a: tuple, b: tuple) -> tuple[float, float]:
    """IoU of two xyxy boxes, and their intersection over the smaller box's area."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0, 0.0
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter), inter / min(area_a, area_b)


def _fits(obj: Obj, placed: list[Obj]) -> bool:
    for other in placed:
        iou, cover = _iou_cover(obj.bbox, other.bbox)
        if iou >= MAX_IOU or cover >= MAX_COVER:
            return False
    return True


def choose(rng: np.random.Generator, options: tuple | list | range):
    """A uniform choice; rng.random() is several times cheaper than rng.integers(),
    and the generator is called once per choice whatever the options are."""
    return options[int(rng.random() * len(options))]


def _sample_background(rng: np.random.Generator) -> tuple[str, dict]:
    kind = choose(rng, BACKGROUNDS)
    tones = list(BACKGROUND_TONES)
    tone = choose(rng, tones)
    params: dict = {"tone": tone}
    if kind == "gradient":
        # Axis-aligned or diagonal, so the ramp needs no trigonometry on the pixel grid;
        # both orientations of each axis, since the tones come in either order.
        params["tone2"] = choose(rng, [t for t in tones if t != tone])
        params["direction"] = choose(rng, ([1, 0], [0, 1], [1, 1], [1, -1]))
    elif kind == "noise":
        params["amplitude"] = choose(rng, range(10, 21))
    return kind, params


def _sample_object(rng: np.random.Generator, spec: ShapesWorldSpec, main: bool) -> Obj:
    """An object at a random position that keeps its whole outline inside the image."""
    shape = choose(rng, SHAPES)
    colour = choose(rng, list(COLOURS))
    size = "large" if main else choose(rng, ("small", "medium"))
    jitter = 1.0 + SIZE_JITTER * (2.0 * rng.random() - 1.0)
    radius = SIZES[size] * jitter * spec.image_size * CIRCUMRADIUS[shape]
    angle = 0.0 if shape == "circle" else MAX_ROTATION * (2.0 * rng.random() - 1.0)
    free = spec.image_size - 2.0 * radius
    x, y = radius + free * rng.random(), radius + free * rng.random()
    return Obj(shape, colour, size, (x, y), radius, angle)


def sample_scene(rng: np.random.Generator, spec: ShapesWorldSpec) -> Scene:
    """Background and 1..max_objects objects placed by rejection sampling.

    An object that finds no free spot in PLACEMENT_TRIES tries ends the placement, so a
    crowded scene simply has fewer objects (possibly fewer than min_objects)."""
    background, params = _sample_background(rng)
    wanted = choose(rng, range(spec.min_objects, spec.max_objects + 1))
    objects: list[Obj] = []
    for index in range(wanted):
        for _ in range(PLACEMENT_TRIES):
            obj = _sample_object(rng, spec, main=index == 0)
            if _fits(obj, objects):
                objects.append(obj)
                break
        else:
            break
    return Scene(background, params, objects)
