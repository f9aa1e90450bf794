"""Encoding time and size of the report's PNGs at zlib levels 6 (Pillow's default), 3 and 1.

    python benchmarks/png_levels.py

The pictures a report writes per image: the input, a heat map's colour picture
and its overlay on the input, each for a smooth map (Grad-CAM-like, upsampled
from 7x7) and a noisy one (gradient-like). At 64 px from the demo shapes and at
224 px from scikit-learn's two sample photos. Levels are interleaved, best of
`--repeats`. Nothing is asserted; not part of the test suite.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image

from nnvis_core.demo.shapes import generate_dataset
from nnvis_reports.assets import blend, colourize, resize_map

LEVELS = (6, 3, 1)


def report_pictures(base: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    side = base.shape[0]
    noisy = np.abs(rng.normal(size=(side, side)))
    smooth = resize_map(rng.normal(size=(7, 7)), (side, side))
    pictures = [base]
    for values in (noisy, smooth):
        colour = colourize(values, float(values.min()), float(values.max()), False)
        pictures += [colour, blend(base, colour)]
    return pictures


def encode(pictures: list[np.ndarray], level: int) -> tuple[float, int]:
    start, size = time.perf_counter(), 0
    for pixels in pictures:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=level)
        size += buffer.tell()
    return time.perf_counter() - start, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    shapes = generate_dataset(20, seed=3)[0]
    photos = [np.asarray(Image.fromarray(p).resize((224, 224), Image.BILINEAR)) for p in load_sample_images().images]
    sets = {"64 px demo shapes": [p for base in shapes for p in report_pictures(base, rng)],
            "224 px photos": [p for base in photos for p in report_pictures(base, rng)]}
    for name, pictures in sets.items():
        best = {level: (float("inf"), 0) for level in LEVELS}
        for _ in range(args.repeats):
            for level in LEVELS:
                seconds, size = encode(pictures, level)
                best[level] = (min(best[level][0], seconds), size)
        default_seconds, default_size = best[6]
        print(f"{name} ({len(pictures)} pictures)")
        for level, (seconds, size) in best.items():
            print(f"  level {level}: {1000 * seconds / len(pictures):6.2f} ms per picture "
                  f"({default_seconds / seconds:4.2f}x faster than 6), {size / len(pictures) / 1024:6.1f} KB "
                  f"({100 * (size / default_size - 1):+5.1f}% against 6)")


if __name__ == "__main__":
    main()
