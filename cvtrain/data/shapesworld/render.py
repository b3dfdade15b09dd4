"""Rasterize a Scene with numpy only: image, striped image, masks, boxes, semantic, edges.

Every shape is tested analytically on a 2x2 grid of sub-pixel points per pixel:
coverage (0..4 points) anti-aliases the image, and the instance mask is coverage >= 2
of 4, so image, masks and boxes come from the same numbers. The grid tests use only
+ - * / and comparisons (no transcendental functions, no BLAS), which IEEE 754 rounds
identically everywhere: the same seed gives the same bytes on every machine.
Each shape is evaluated on its own bounding window, not on the whole image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .scene import Obj, Scene
from .spec import BACKGROUND_TONES, COLOURS, ShapesWorldSpec, class_id

PIXEL_NOISE = 4  # +- grey levels added to every channel of every pixel
STRIPE_DARKEN = 0.35  # the dark stripes of the 'striped' domain are this bright


@dataclass
class Rendered:
    """Everything drawn for one scene; instance arrays follow scene.objects order (main
    first) restricted to `kept`, the objects with a non-empty visible mask."""

    image: np.ndarray  # uint8 (H, W, 3)
    striped: np.ndarray  # uint8 (H, W, 3): same scene, shapes filled with stripes
    semantic: np.ndarray  # uint8 (H, W): visible shape class id, 0 = background
    masks: np.ndarray  # bool (k, H, W): visible pixels of each instance
    boxes: np.ndarray  # float32 (k, 4): tight xyxy boxes of the masks
    classes: np.ndarray  # int64 (k,): 1..6
    edges: np.ndarray  # uint8 (H, W): 255 on instance boundaries
    kept: list[int]


@dataclass
class _Layer:
    """Sub-pixel coverage (0..4) of one object on its window [y0:y1, x0:x1]."""

    y0: int
    x0: int
    counts: np.ndarray  # int (h, w)

    @property
    def window(self) -> tuple[slice, slice]:
        h, w = self.counts.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)


@lru_cache(maxsize=8)
def _subpixel_axis(size: int) -> np.ndarray:
    """Coordinates of the 2 sub-pixel samples of every pixel j: j + 0.25, j + 0.75."""
    return (np.arange(2 * size) + 0.5) * 0.5


def _subpixels(lo: int, hi: int, size: int) -> np.ndarray:
    return _subpixel_axis(size)[2 * lo : 2 * hi]


def _inside_polygon(xs: np.ndarray, ys: np.ndarray, outline: tuple) -> np.ndarray:
    """Even-odd test of the grid xs x ys against a polygon (convex or not, e.g. the star).

    A horizontal ray from (x, y) crosses edge e iff y lies between its end points and
    x < the edge's x at height y. That crossing x depends on the row only, so it is
    computed per (row, edge) and compared against all columns at once."""
    v = np.array(outline)
    w = np.concatenate((v[1:], v[:1]))  # edge e runs from v[e] to w[e]
    x1, y1, x2, y2 = v[:, 0], v[:, 1], w[:, 0], w[:, 1]
    yy = ys[:, None]
    spans = (y1 > yy) != (y2 > yy)  # (Y, E)
    dy = np.where(y2 == y1, 1.0, y2 - y1)  # horizontal edges never span a row
    cross_x = np.where(spans, x1 + (yy - y1) * ((x2 - x1) / dy), -np.inf)
    # A row meets at most a few edges (2 for a convex shape, 4 for the star): keep the
    # largest crossings, so the per-pixel work does not grow with the number of edges.
    most = int(spans.sum(axis=1).max())
    top = -np.sort(-cross_x, axis=1)[:, :most]  # (Y, K), descending, -inf padded
    if most == 2:
        return (xs[None, :] >= top[:, 1:2]) & (xs[None, :] < top[:, 0:1])
    crossings = xs[None, None, :] < top.T[:, :, None]  # (K, Y, X)
    return np.bitwise_xor.reduce(crossings, axis=0)


def _layer(obj: Obj, size: int) -> _Layer:
    bx0, by0, bx1, by1 = obj.bbox
    x0, y0 = max(0, math.floor(bx0)), max(0, math.floor(by0))
    x1, y1 = min(size, math.ceil(bx1)), min(size, math.ceil(by1))
    xs, ys = _subpixels(x0, x1, size), _subpixels(y0, y1, size)
    if obj.outline is None:
        cx, cy = obj.centre
        inside = ((ys - cy) ** 2)[:, None] + ((xs - cx) ** 2)[None, :] <= obj.radius * obj.radius
    else:
        inside = _inside_polygon(xs, ys, obj.outline)
    inside = inside.view(np.uint8)
    # Sum the 2x2 sub-samples of each pixel: four strided views beat a reshaped sum.
    counts = inside[0::2, 0::2] + inside[1::2, 0::2] + inside[0::2, 1::2] + inside[1::2, 1::2]
    return _Layer(y0, x0, counts)


@lru_cache(maxsize=8)
def _grids(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-centre coordinates and the stripe pattern, shared by all images of a size."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
    period = max(2, size // 32)  # stripe width in pixels
    stripes = ((np.arange(size)[:, None] + np.arange(size)[None, :]) // period) % 2
    return xs, ys, stripes.astype(np.float32)


def _random_ints(rng: np.random.Generator, amplitude: int, shape: tuple[int, ...]) -> np.ndarray:
    """Integers in [-amplitude, amplitude] (int16), from raw random bytes: several times
    faster than rng.integers, and the slight modulo bias does not matter for noise."""
    raw = np.frombuffer(rng.bytes(math.prod(shape)), dtype=np.uint8).reshape(shape)
    return (raw % (2 * amplitude + 1)).astype(np.int16) - amplitude


@lru_cache(maxsize=64)
def _flat_background(size: int, kind: str, tone: str, tone2: str | None, direction: tuple | None) -> np.ndarray:
    """The deterministic part of a background (a tone or a ramp), computed once per kind."""
    first = np.array(BACKGROUND_TONES[tone], dtype=np.float32)
    if kind != "gradient":
        return np.broadcast_to(first, (size, size, 3)).copy()
    xs, ys, _ = _grids(size)
    ramp = xs * direction[0] + ys * direction[1]
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    second = np.array(BACKGROUND_TONES[tone2], dtype=np.float32)
    return first + ramp[..., None] * (second - first)


def _background(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """Float32 (H, W, 3) background: a plain tone, a linear ramp between two tones, or a
    tone with blocky (2x2) grey noise."""
    params = scene.background_params
    direction = tuple(params["direction"]) if "direction" in params else None
    image = _flat_background(size, scene.background, params["tone"], params.get("tone2"), direction).copy()
    if scene.background == "noise":
        half = (size + 1) // 2
        blocks = _random_ints(rng, params["amplitude"], (half, half))
        image += blocks.repeat(2, axis=0).repeat(2, axis=1)[:size, :size, None]
    return image


def _composite(base: np.ndarray, scene: Scene, layers: dict[int, _Layer]) -> np.ndarray:
    """(2, H, W, 3) float32: the plain and the striped image, painted back to front with
    alpha = coverage / 4; both styles in one array halves the numpy calls."""
    images = np.stack([base, base])
    stripes = _grids(base.shape[0])[2]
    for index in scene.draw_order:
        layer = layers[index]
        rows, cols = layer.window
        colour = np.array(COLOURS[scene.objects[index].colour], dtype=np.float32)
        fill = np.empty((2, *layer.counts.shape, 3), dtype=np.float32)
        fill[0] = colour
        dark = colour * np.float32(STRIPE_DARKEN)
        fill[1] = dark + stripes[rows, cols, None] * (colour - dark)
        alpha = layer.counts[..., None] * np.float32(0.25)
        window = images[:, rows, cols]
        window += (fill - window) * alpha
    return images


def _visible_masks(scene: Scene, layers: dict[int, _Layer], size: int) -> np.ndarray:
    """(n, H, W) bool: each object's mask minus what later-drawn objects cover."""
    masks = np.zeros((len(scene.objects), size, size), dtype=bool)
    for index, layer in layers.items():
        rows, cols = layer.window
        masks[index, rows, cols] = layer.counts >= 2
    covered = np.zeros((size, size), dtype=bool)
    for index in reversed(scene.draw_order):  # front to back
        own = masks[index].copy()
        masks[index] &= ~covered
        covered |= own
    return masks


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight xyxy boxes (float32, pixel edges: x1 = last column + 1) of non-empty
    masks (k, H, W), two reductions for all masks at once."""
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    height, width = masks.shape[1:]
    return np.stack(
        [cols.argmax(axis=1), rows.argmax(axis=1),
         width - cols[:, ::-1].argmax(axis=1), height - rows[:, ::-1].argmax(axis=1)],
        axis=1,
    ).astype(np.float32)


def edge_map(masks: np.ndarray) -> np.ndarray:
    """uint8 (H, W): 255 on instance pixels whose 4-neighbour belongs to another
    instance or to the background (inner boundaries), 0 elsewhere."""
    ids = np.zeros(masks.shape[1:], dtype=np.uint8)
    for i, mask in enumerate(masks):
        ids[mask] = i + 1
    inside = ids > 0
    edge = np.zeros_like(inside)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True  # outside counts as background
    vertical = ids[1:] != ids[:-1]
    horizontal = ids[:, 1:] != ids[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return (edge & inside).astype(np.uint8) * np.uint8(255)


def render_all(scene: Scene, spec: ShapesWorldSpec, rng: np.random.Generator) -> Rendered:
    """Both styles and every pixel annotation from one rasterization.

    rng draws the background texture and the pixel noise (shared by both styles, so
    plain and striped differ only inside the shapes)."""
    size = spec.image_size
    layers = {i: _layer(obj, size) for i, obj in enumerate(scene.objects)}
    base = _background(scene, size, rng)
    noise = _random_ints(rng, PIXEL_NOISE, (size, size, 3))
    images = np.clip(np.rint(_composite(base, scene, layers)).astype(np.int16) + noise, 0, 255).astype(np.uint8)
    masks = _visible_masks(scene, layers, size)
    kept = [i for i in range(len(masks)) if masks[i].any()]
    masks = masks[kept]
    classes = np.array([class_id(scene.objects[i].shape) for i in kept], dtype=np.int64)
    semantic = np.zeros((size, size), dtype=np.uint8)
    for mask, cls in zip(masks, classes):
        semantic[mask] = cls
    return Rendered(
        image=images[0],
        striped=images[1],
        semantic=semantic,
        masks=masks,
        boxes=mask_boxes(masks),
        classes=classes,
        edges=edge_map(masks),
        kept=kept,
    )


def render(
    scene: Scene, spec: ShapesWorldSpec, rng: np.random.Generator, style: str = "plain"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8 HxWx3, semantic uint8 HxW, masks bool kxHxW, boxes float32 kx4,
    classes int64 k) for style 'plain' or 'striped'."""
    if style not in ("plain", "striped"):
        raise ValueError(f"style must be 'plain' or 'striped', got {style!r}")
    out = render_all(scene, spec, rng)
    image = out.image if style == "plain" else out.striped
    return image, out.semantic, out.masks, out.boxes, out.classes


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of uint8 RGB images (..., 3) -> uint8 (...), in integers so
    the result is exact: (299 R + 587 G + 114 B + 500) // 1000."""
    rgb = np.asarray(images).astype(np.uint32)
    luma = (299 * rgb[..., 0] + 587 * rgb[..., 1] + 114 * rgb[..., 2] + 500) // 1000
    return luma.astype(np.uint8)
