"""Image files of the real-format data sets: opened with one-line errors, checked up front.

COCO, VOC and COCO-captions readers all point at folders of image files; a wrong folder
should fail when the data set is built, not an epoch later, and an unreadable file
should name itself. With dataset.verify=true every image is decoded once when the data
set is built, and all unreadable files are listed in one error.
"""

from __future__ import annotations

import os
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


# --- dataset.verify: decode every image once, before training -------------------------

VERIFY_SHOWN = 5  # unreadable files named in the error; the rest are counted
_VERIFY_BATCH = 4096  # files handed to the thread pool at a time
_VERIFIED: set[tuple] = set()  # (path, size, mtime) of files read in this process: val and test may share them


def wants_verify(cfg) -> bool:
    """Whether the dataset config asks for dataset.verify (configs without the key do not)."""
    try:
        getter = getattr(cfg, "get", None)
        value = getter("verify", False) if callable(getter) else getattr(cfg, "verify", False)
    except (AttributeError, KeyError):
        return False
    return bool(value)


def unreadable_images(paths: Iterable[Path], threads: int | None = None) -> list[tuple[Path, str]]:
    """(path, why) of every file among `paths` that does not decode, in the given order.

    Each file is opened and fully decoded (PIL's load), so a truncated JPEG counts, not only
    a file whose header is wrong. A thread pool reads several files at once (PIL's decoders
    release the GIL); a file already read in this process, and not changed since, is skipped.
    """
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    Image.init()  # every format plugin registered here, not raced for by the threads
    todo = list(dict.fromkeys(str(p) for p in paths))
    if not todo:
        return []
    workers = threads or min(32, (os.cpu_count() or 1) + 4)  # reads wait on the disk too
    results: list[tuple[tuple | None, str | None]] = []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool:
        for start in range(0, len(todo), _VERIFY_BATCH):  # bounded: not a million futures at once
            results += pool.map(_check_file, todo[start : start + _VERIFY_BATCH])
    bad = []
    for path, (key, why) in zip(todo, results):
        if why is None:
            _VERIFIED.add(key)
        else:
            bad.append((Path(path), why))
    return bad


def verify_images(paths: Iterable[Path], what: str = "images") -> None:
    """Read every file once; a `UserError` that lists all unreadable ones, when any."""
    paths = list(paths)
    bad = unreadable_images(paths)
    if not bad:
        return
    shown = ", ".join(f"'{path}' ({why})" for path, why in bad[:VERIFY_SHOWN])
    more = f", ... ({len(bad) - VERIFY_SHOWN} more)" if len(bad) > VERIFY_SHOWN else ""
    from cvtrain.errors import UserError

    raise UserError(f"dataset.verify: {len(bad)} of {len(set(map(str, paths)))} {what} cannot be read: "
                    f"{shown}{more}; replace or remove them (and any annotation or split-list entry naming them).")


def _check_file(path: str) -> tuple[tuple | None, str | None]:
    """(the file's identity, None) when it decodes as an image, else (None, a few words on why not)."""
    from PIL import Image, UnidentifiedImageError

    try:
        stat = os.stat(path)
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key in _VERIFIED:
            return key, None
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError:
        return None, "missing"
    except UnidentifiedImageError:
        return None, "not an image"
    except Exception as err:  # truncated data, bad chunks, decompression bombs: all unreadable
        text = " ".join(str(err).split()) or type(err).__name__
        return None, text if len(text) <= 60 else text[:57] + "..."
    return key, None
