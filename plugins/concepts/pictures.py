"""What a concept looks like to the model: its direction in the layer, drawn by the toolkit's
feature-visualization renderer (Fourier image, decorrelated colour, robustness transforms), so a
concept is seen as the model sees it and not only through the crops that hold it."""

from __future__ import annotations

import numpy as np
import torch

from nnvis_core import Param
from nnvis_core.toolkit.featvis import objectives
from nnvis_core.toolkit.featvis.render import Settings, render

PICTURE_STEPS = Param("picture_steps", int, 128, "optimization steps of each concept's feature visualization "
                      "(its direction in the layer, rendered as channel_maximization renders a channel); 0: none",
                      minimum=0, maximum=4096)
LARGEST = 128  # px: a picture larger than this costs more than it shows at the atlas's 64 px
CHUNK = 16  # directions optimized together


def direction_pictures(ctx, layer: str, vectors: np.ndarray, steps: int) -> list[np.ndarray | None]:
    """One (S, S, 3) float picture in [0, 1] per row of `vectors` ((n, channels), in the layer's
    channel space), optimized for objectives.direction; Nones when steps is 0."""
    if steps == 0:
        return [None] * len(vectors)
    preprocess = ctx.model.preprocess
    side = min(LARGEST, preprocess.side)
    settings = Settings(size=side, steps=steps, seed=ctx.seed)
    pictures: list[np.ndarray | None] = []
    for start in range(0, len(vectors), CHUNK):
        chunk = torch.as_tensor(np.asarray(vectors[start:start + CHUNK]), dtype=torch.float32)
        made = render(ctx.module, objectives.direction(layer, chunk), len(chunk), settings, mean=preprocess.mean,
                      std=preprocess.std, device=ctx.device)
        pictures += [np.asarray(image) for image in made.images]
    return pictures
