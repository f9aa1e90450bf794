"""Parameters and card pieces the synthesis plugins share."""

from __future__ import annotations

import numpy as np
import torch

from nnvis_core import Chart, Param, Text
from nnvis_plugins.synthesis.optimize import OPTIMIZERS
from nnvis_plugins.synthesis.texture import Normalize, device_normalizer


def steps_param(default: int) -> Param:
    return Param("steps", int, default, "optimizer steps (L-BFGS iterations or Adam steps)", minimum=0, maximum=5000)


OPTIMIZER = Param("optimizer", str, "lbfgs", "lbfgs (Gatys et al.'s choice, fewer steps) or adam", choices=OPTIMIZERS)
SEED = Param("seed", int, 0, "seed of the starting noise (the same seed gives the same picture)")


def max_images_param(default: int) -> Param:
    return Param("max_images", int, default, "work on the report's first N images only (0 = all): each one is an "
                 "optimization of its own, slow over a large folder", minimum=0, maximum=100000)


def beyond_cap(item, params) -> list | None:
    """A one-line card for an image past `max_images`, or None when the image is to be processed."""
    cap = params["max_images"]
    if cap and item.record.index >= cap:
        return [Text("not computed", f"only the first {cap} images are processed (max_images={cap}; "
                     "0 processes all)")]
    return None


def model_normalizer(ctx) -> Normalize:
    return device_normalizer(ctx.model.preprocess.mean, ctx.model.preprocess.std, ctx.device)


def item_pixels(ctx, item) -> torch.Tensor:
    """The image as the model sees it, (1, 3, H, W) in [0, 1] on the device."""
    return torch.from_numpy(item.pixels).permute(2, 0, 1)[None].float().div(255).contiguous().to(ctx.device)


def loss_chart(title: str, curves: dict[str, np.ndarray], what: str) -> Chart:
    """Loss curves on a log10 scale (the losses fall by orders of magnitude)."""
    length = max(len(values) for values in curves.values())
    series = {name: np.log10(np.maximum(np.asarray(values, dtype=float), 1e-30)).tolist()
              for name, values in curves.items()}
    return Chart(title, list(range(length)), series, x_label="loss evaluation (forward + backward pass)",
                 y_label=f"log10 {what}", minimized=True)
