"""Benchmark ShapesWorld: render a split into a fresh cache, then load it back.

    python scripts/bench_shapesworld.py [--num-samples 10000] [--image-size 64]

Rendering (every annotation, both image styles) runs on one core; the cached load is
what every training run after the first one pays.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from cvtrain.data.shapesworld import ShapesWorldSpec, clear_memo, generate_split, load_split, save_split


def _rate(label: str, n: int, seconds: float) -> str:
    return f"{label}: {n} samples in {seconds:.2f} s ({n / seconds:.0f} samples/s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=10000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--split", default="train")
    args = parser.parse_args()
    spec = ShapesWorldSpec(image_size=args.image_size)
    n = args.num_samples

    with tempfile.TemporaryDirectory(prefix="shapesworld-bench-") as cache_dir:
        start = time.perf_counter()
        data = generate_split(args.split, n, spec)
        rendered = time.perf_counter() - start

        start = time.perf_counter()
        npz = save_split(data, cache_dir)
        written = time.perf_counter() - start
        del data

        clear_memo()
        start = time.perf_counter()
        loaded = load_split(args.split, n, spec, cache_dir=cache_dir)
        read = time.perf_counter() - start
        assert len(loaded) == n
        size_mb = (npz.stat().st_size + npz.with_suffix(".json").stat().st_size) / 1e6

    print(f"{_rate('render', n, rendered)}; {_rate('cached load', n, read)}")
    print(f"cache write: {written:.2f} s, {size_mb:.0f} MB on disk; image_size={args.image_size}")


if __name__ == "__main__":
    main()
