"""The colorization domain: ShapesWorld's scenes repainted so that colour follows shape
and texture often, and lightness never tells it.

The ordinary images cannot teach colorization: their eight colours all have different
lightness, so the L channel gives the colour away pixel by pixel, and their colour is
drawn independently of the shape, so nothing else does. Here:

- every shape is painted in one of twelve hues of equal CIELAB lightness (L* 65,
  chroma 35, hues 15° + k 30°): L alone says nothing about the hue;
- each object is flat or striped (a fair coin), and its hue is the typical one of its
  (shape, texture) pair with probability P_TYPICAL (flat shape i: hue 2i, striped:
  hue 2i + 7 mod 12), else one of the eleven others uniformly. So a colorizer that
  recognises shape and texture can be right 70 % of the time, and must guess otherwise:
  the multimodal case where an L2 regression averages towards grey and a GAN commits;
- scenes, backgrounds (dark greys) and pixel noise are the ordinary images' (same seed
  streams), so the layout of sample i is that of every other task's sample i; the
  colours come from a stream of their own.

The split is cached beside ShapesWorld's, keyed by the generator version, this module's
version, the spec, the split and the count; the ordinary images are not touched.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .render import PIXEL_NOISE, STRIPE_DARKEN, _background, _grids, _layer, _random_ints
from .scene import choose, sample_scene
from .spec import GENERATOR_VERSION, SHAPES, ShapesWorldSpec, split_id
from .store import _PIXELS, _SCENE, _atomic_write, default_cache_dir

COLOUR_DOMAIN_VERSION = 1
_COLOURS = 3  # the seed stream of the colour draws (0-2: scene, pixels, text)
P_TYPICAL = 0.7

# L* 65, chroma 35, hue 15° + k 30° (k = 0..11), through scikit-image's lab2rgb, rounded;
# tests/test_colorization.py checks that their lightness is equal.
HUES: tuple[tuple[int, int, int], ...] = (
    (219, 134, 143), (212, 140, 115), (192, 150, 97), (163, 161, 96), (128, 169, 112), (88, 173, 141),
    (45, 175, 173), (34, 172, 201), (85, 165, 218), (138, 155, 218), (181, 144, 202), (209, 135, 175),
)


def typical_hue(shape: str, striped: bool) -> int:
    """The hue index a (shape, texture) pair takes with probability P_TYPICAL."""
    i = SHAPES.index(shape)
    return (2 * i + 7) % len(HUES) if striped else 2 * i


def draw_paint(shape: str, rng: np.random.Generator) -> tuple[int, bool]:
    """(hue index, striped) of one object."""
    striped = rng.random() < 0.5
    hue = typical_hue(shape, striped)
    if rng.random() >= P_TYPICAL:
        hue = choose(rng, [h for h in range(len(HUES)) if h != hue])
    return hue, striped


def render_colour_sample(spec: ShapesWorldSpec, split: str, index: int) -> np.ndarray:
    """uint8 (H, W, 3): sample `index` of `split` in the colorization domain."""
    seeds = [spec.seed, split_id(split), index]
    scene = sample_scene(np.random.default_rng(seeds + [_SCENE]), spec)
    pixels = np.random.default_rng(seeds + [_PIXELS])
    size = spec.image_size
    image = _background(scene, size, pixels)
    noise = _random_ints(pixels, PIXEL_NOISE, (size, size, 3))
    paint = np.random.default_rng(seeds + [_COLOURS])
    stripes = _grids(size)[2]
    for index_ in scene.draw_order:
        obj = scene.objects[index_]
        hue, striped = draw_paint(obj.shape, paint)
        layer = _layer(obj, size)
        rows, cols = layer.window
        colour = np.array(HUES[hue], dtype=np.float32)
        fill = np.broadcast_to(colour, (*layer.counts.shape, 3))
        if striped:
            dark = colour * np.float32(STRIPE_DARKEN)
            fill = dark + stripes[rows, cols, None] * (colour - dark)
        alpha = layer.counts[..., None] * np.float32(0.25)
        image[rows, cols] += (fill - image[rows, cols]) * alpha
    return np.clip(np.rint(image).astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _key(split: str, num_samples: int, spec: ShapesWorldSpec) -> str:
    import dataclasses

    what = {"version": GENERATOR_VERSION, "colours": COLOUR_DOMAIN_VERSION, "spec": dataclasses.asdict(spec),
            "split": split, "n": num_samples}
    return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()


_MEMO: dict[str, np.ndarray] = {}


def load_colour_split(split: str, num_samples: int, spec: ShapesWorldSpec | None = None,
                      cache_dir: str | None = None) -> np.ndarray:
    """uint8 (N, H, W, 3) colorization images of a split: memo, else disk cache, else rendered
    (then cached; a cache that cannot be read or written is rendered again, never fatal)."""
    spec = spec or ShapesWorldSpec()
    key = _key(split, num_samples, spec)
    path = default_cache_dir(cache_dir) / f"colour-{split}-{num_samples}-{key[:20]}.npz"
    if str(path) in _MEMO:
        return _MEMO[str(path)]
    images = _read(path, key, num_samples, spec.image_size)
    if images is None:
        images = np.stack([render_colour_sample(spec, split, i) for i in range(num_samples)])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, lambda f: np.savez(f, key=np.frombuffer(key.encode(), np.uint8), images=images))
        except OSError:
            pass
    _MEMO[str(path)] = images
    return images


def _read(path: Path, key: str, n: int, size: int) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            if f["key"].tobytes().decode() != key:
                return None
            images = f["images"]
    except Exception:  # missing, corrupt or foreign: render again
        return None
    return images if images.shape == (n, size, size, 3) else None
