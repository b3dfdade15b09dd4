"""Image files of the real-format data sets: opened with one-line errors, checked up front.

COCO, VOC and COCO-captions readers all point at folders of image files; a wrong folder
should fail when the data set is built, not an epoch later, and an unreadable file
should name itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

CHECKED_FILES = 50  # files looked for when a data set is built: enough to catch a wrong folder, cheap on any disk


def first_missing(paths: Iterable[Path], limit: int = CHECKED_FILES) -> Path | None:
    """The first of the first `limit` paths that is not a file, or None."""
    for k, path in enumerate(paths):
        if k >= limit:
            return None
        if not Path(path).is_file():
            return Path(path)
    return None


def open_rgb(path: Path):
    """A PIL RGB image of the file's stored pixels (grayscale and CMYK become RGB), or a
    one-line error naming the file.

    EXIF orientation is not applied: COCO and VOC annotate the stored pixels, as
    torchvision's readers load them.
    """
    from PIL import Image, UnidentifiedImageError

    from cvtrain.errors import UserError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"dataset: image '{path}' is missing; restore it or point the dataset at a complete copy."
                        ) from None
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"dataset: image '{path}' cannot be read ({err}); replace the file.") from None
