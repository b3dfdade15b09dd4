"""Write the photos bundled with scikit-image and scikit-learn to a folder: real photos for
predict demos (colorization, translation) that need no download.

    python scripts/sample_photos.py photos/        # astronaut, chelsea, coffee, rocket, china, flower
    cvtrain task=colorization mode=predict ckpt=RUN/checkpoints/best.pt input=photos/

scikit-image is a test dependency of cvtrain, scikit-learn an optional one (extra `digits`).
"""

from __future__ import annotations

import sys
from pathlib import Path


def bundled_photos() -> dict:
    """{name: uint8 (H, W, 3)} of the photos that ship inside the installed packages."""
    photos = {}
    try:
        from skimage import data

        for name in ("astronaut", "chelsea", "coffee", "rocket"):
            photos[name] = getattr(data, name)()
    except ImportError:
        print("scikit-image not installed: its photos are left out", file=sys.stderr)
    try:
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        for path, image in zip(bunch.filenames, bunch.images):
            photos[Path(path).stem] = image
    except ImportError:
        print("scikit-learn not installed: its photos are left out", file=sys.stderr)
    return photos


def main() -> None:
    from PIL import Image

    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/sample_photos.py OUT_FOLDER")
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, image in bundled_photos().items():
        Image.fromarray(image).convert("RGB").save(out / f"{name}.png")
        print(out / f"{name}.png")


if __name__ == "__main__":
    main()
