"""Demo images with a planted concept: one class's label is carried by a texture patch, not by a shape.

Every image of the planted class shows a random shape of any class with a striped patch somewhere on
it; no other image has the patch. A model trained on them can only tell the planted class by the
stripes, so a concept method must find the stripes for that class, and nothing for a control patch
no label depends on: evidence that can fail (issue 38's planted-concept test, docs/concepts.md).

>>> images, patches, labels = planted_dataset(2400, seed=0, planted=3, size=32)
>>> model = train_planted(images, labels, seed=0, epochs=6)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from nnvis_core.demo.model import DemoNet, normalize
from nnvis_core.demo.shapes import CLASS_NAMES, balanced_labels, draw_sample

PATCH_SHARE = 0.22  # the patch's side over the image's: 14 pixels of 64, 7 of 32
PATCHES = ("stripes", "blue")  # the planted texture, and a control no label depends on


def patch_side(size: int) -> int:
    """The patch's side on an image of `size` pixels."""
    return max(3, round(size * PATCH_SHARE))


def paint_patch(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Paint a square patch of `kind` (patch_side pixels) at a random place of `image` (H, W, 3 uint8,
    changed in place); return its mask (H, W bool). stripes: black and white diagonal stripes, 3 pixels
    wide; blue: solid."""
    if kind not in PATCHES:
        raise ValueError(f"patch must be one of {', '.join(PATCHES)}, got {kind!r}")
    size = image.shape[0]
    side = patch_side(size)
    top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    rows, columns = np.mgrid[0:side, 0:side]
    if kind == "stripes":
        patch = np.where(((rows + columns) // 3) % 2 == 0, 255, 0)[..., None].repeat(3, axis=2)
    else:
        patch = np.broadcast_to(np.array([30, 60, 230]), (side, side, 3))
    image[top:top + side, left:left + side] = patch
    mask = np.zeros(image.shape[:2], bool)
    mask[top:top + side, left:left + side] = True
    return mask


def planted_dataset(count: int, seed: int, planted: int, size: int = 64
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` images with balanced labels: (images (N, H, W, 3) uint8, patch masks (N, H, W) bool,
    labels (N,)). Class `planted` shows a random shape of any class with stripes; the others show
    their own shape and no patch (an all-False mask)."""
    if not 0 <= planted < len(CLASS_NAMES):
        raise ValueError(f"planted must be a class index below {len(CLASS_NAMES)}, got {planted}")
    rng = np.random.default_rng(seed)
    labels = balanced_labels(count, rng)
    images = np.empty((count, size, size, 3), np.uint8)
    patches = np.zeros((count, size, size), bool)
    for i, label in enumerate(labels):
        shape = int(rng.integers(len(CLASS_NAMES))) if label == planted else int(label)
        images[i] = draw_sample(rng, size, shape)[0]
        if label == planted:
            patches[i] = paint_patch(images[i], "stripes", rng)
    return images, patches, labels


def concept_images(count: int, seed: int, kind: str, size: int = 64) -> np.ndarray:
    """(count, H, W, 3) uint8 images of random shapes of any class, each with a `kind` patch: the
    concept's examples for TCAV."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        images[i] = draw_sample(rng, size)[0]
        paint_patch(images[i], kind, rng)
    return images


def train_planted(images: np.ndarray, labels: np.ndarray, seed: int = 0, epochs: int = 6,
                  batch_size: int = 32, lr: float = 2e-3) -> nn.Module:
    """A DemoNet trained on the images (Adam, cross-entropy, shuffled batches), in eval mode."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = DemoNet()
    x, y = normalize(images), torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            chosen = order[start:start + batch_size]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[chosen]), y[chosen]).backward()
            optimizer.step()
    return model.eval()


def write_planted(folder: Path, size: int = 32, train_size: int = 2400, epochs: int = 6, seed: int = 0,
                  planted: int = CLASS_NAMES.index("star"), per_class: int = 8) -> Path:
    """Everything a report needs to look for the planted concept, under `folder`; returns the README.

    images/CLASS/*.png (held-out planted images, `per_class` a class) and masks/ (the patches), concepts/
    (stripes and the blue control, 30 images each), random/ (330 plain demo images: TCAV's random
    sets), planted.pt (a DemoNet trained on `train_size` planted images), and README.md with the command."""
    from PIL import Image

    from nnvis_core.demo.shapes import generate_dataset

    folder = Path(folder)
    train_images, _, train_labels = planted_dataset(train_size, seed, planted, size)
    model = train_planted(train_images, train_labels, seed=seed, epochs=epochs)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "planted.pt")
    images, patches, labels = planted_dataset(per_class * len(CLASS_NAMES), seed + 1, planted, size)
    for n, (picture, patch, label) in enumerate(zip(images, patches, labels)):
        name = f"{CLASS_NAMES[label]}/{n:03d}.png"
        for part, array in (("images", picture), ("masks", patch.astype(np.uint8) * 255)):
            (folder / part / CLASS_NAMES[label]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(folder / part / name)
    for kind, offset in (("stripes", 5), ("blue", 6)):
        (folder / "concepts" / kind).mkdir(parents=True, exist_ok=True)
        for n, picture in enumerate(concept_images(30, seed + offset, kind, size)):
            Image.fromarray(picture).save(folder / "concepts" / kind / f"{n:02d}.png")
    (folder / "random").mkdir(parents=True, exist_ok=True)
    for n, picture in enumerate(generate_dataset(330, seed + 7, size)[0]):
        Image.fromarray(picture).save(folder / "random" / f"{n:03d}.png")
    readme = folder / "README.md"
    readme.write_text(
        f"# A planted concept\n\nClass {CLASS_NAMES[planted]} is carried by a striped patch, not by a shape "
        f"(nnvis_core.demo.planted; docs/concepts.md). planted.pt is a DemoNet trained on {train_size} such "
        f"images of {size} px for {epochs} epochs. Look for the stripes:\n\n"
        f"    nnvis report {folder}/images --model {folder}/planted.pt --arch demo --resize {size} --crop {size} "
        f"--masks {folder}/masks --plugins tcav,craft,concept_dictionary --concepts {folder}/concepts "
        f"--set tcav.random={folder}/random --set tcav.layers=features.11,features.16 --set tcav.min_images=1 "
        f"--set craft.min_images=1 -o {folder}/report\n", encoding="utf-8")
    return readme
