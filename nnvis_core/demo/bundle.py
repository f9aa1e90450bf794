"""Write the bundled demo images and their ground-truth masks.

The layout is the one nnvis reads for a labelled image folder
(images/<class>/<class>_NN.png, labels from folder names) plus a parallel
masks/ tree (8-bit PNG, 255 = object) for checking attributions against the
true object.  The seed differs from the training seed, so these images were
never seen in training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from nnvis_core.demo.shapes import CLASS_NAMES, draw_sample

DEFAULT_ROOT: Path = Path(__file__).resolve().parents[2] / "examples" / "demo"


def write_bundle(root: Path = DEFAULT_ROOT, per_class: int = 5, seed: int = 2024) -> None:
    """Write `per_class` images and masks per class under `root`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for index, name in enumerate(CLASS_NAMES):
        image_dir = root / "images" / name
        mask_dir = root / "masks" / name
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            image, mask, _ = draw_sample(rng, 64, index)
            filename = f"{name}_{n:02d}.png"
            Image.fromarray(image, mode="RGB").save(image_dir / filename)
            Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(mask_dir / filename)


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ROOT
    write_bundle(target)
    print(f"wrote demo images and masks under {target}")
