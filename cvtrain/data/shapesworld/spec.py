"""The vocabulary of ShapesWorld and the spec that, with a split name, fixes a data set.

Everything a scene can contain is named here, once: the renderer, the caption grammar
and the tests all read these tables, so a new colour or shape is one line. Changing
anything that alters the rendered output must bump GENERATOR_VERSION, which is part of
the cache key: old caches are then ignored instead of silently reused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# Bump whenever the output for a given spec changes (pixels, annotations or text).
GENERATOR_VERSION = 3  # 3: situations with agent, patient, tool and place, three frames each

# Class index = position; semantic / COCO category id = position + 1 (0 = background).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "diamond")

# Saturated, bright colours: every one has a luma >= 100, while the backgrounds stay
# below ~80, so shapes remain visible in colour and in the grayscale images derived
# from them. No two are close to each other.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 50, 50),
    "green": (50, 190, 70),
    "blue": (60, 120, 255),
    "yellow": (245, 225, 50),
    "purple": (170, 80, 230),
    "orange": (250, 140, 30),
    "cyan": (40, 220, 230),
    "white": (245, 245, 245),
}

# Radius of the circle of equal AREA, as a fraction of image_size (each drawn with
# +-SIZE_JITTER). Equal area, not equal circumradius, so that a large triangle is never
# smaller than a medium circle: the main object must be the largest one.
SIZES: dict[str, float] = {"small": 0.08, "medium": 0.11, "large": 0.16}
SIZE_JITTER = 0.1

BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "noise")

# Dark tones for backgrounds; the names are used in captions ("on a gray background")
# and are deliberately not shape colours.
BACKGROUND_TONES: dict[str, tuple[int, int, int]] = {
    "black": (16, 16, 20),
    "dark": (38, 40, 46),
    "gray": (64, 64, 68),
}

# Fixed ids, so the seeds of a split never depend on Python's salted hash().
SPLIT_IDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}


def class_id(shape: str) -> int:
    """Semantic / COCO category id of a shape: 1..len(SHAPES), 0 is background."""
    return SHAPES.index(shape) + 1


def split_id(split: str) -> int:
    """A stable integer per split name; unknown names get one from their sha1."""
    if split in SPLIT_IDS:
        return SPLIT_IDS[split]
    return int.from_bytes(hashlib.sha1(split.encode()).digest()[:4], "big") + len(SPLIT_IDS)


@dataclass(frozen=True)
class ShapesWorldSpec:
    """What, besides the split name and sample count, determines the rendered data."""

    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        # Fail at construction with one clear line rather than deep in the renderer.
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [16, 1024], got {self.image_size}")
        if not 1 <= self.min_objects <= self.max_objects <= 8:
            raise ValueError(
                "need 1 <= min_objects <= max_objects <= 8, got "
                f"min_objects={self.min_objects}, max_objects={self.max_objects}"
            )
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
