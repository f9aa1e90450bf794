"""What the report shows of a distillation: the images per class, the training curve, the accuracy table."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from nnvis_core import Chart, Gallery, Table
from nnvis_plugins.distillation.evaluation import Score
from nnvis_plugins.distillation.synthetic import Distilled


def as_pictures(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> list[np.ndarray]:
    """Model inputs back to (H, W, 3) pictures in [0, 1], clipped where the optimization left that range."""
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    if images.shape[1] == 1:  # a grayscale model's inputs (one channel): shown gray
        images = images.expand(-1, len(mean), -1, -1)
    pixels = (images * std_t + mean_t).clamp(0, 1).permute(0, 2, 3, 1)
    return [picture for picture in pixels.detach().cpu().double().numpy()]


DISTILLED_TILE = 112  # CSS px: a 28 px digit at four times its size, where the papers' prototypes show


def image_grid(distilled: Distilled, per_class: int, class_names: Sequence[str], mean: Sequence[float],
               std: Sequence[float], method: str, training: str | None = None) -> Gallery:
    """One row per class (one row of all classes when there is one image per class). `training` says how
    the evaluation trains on them when it is not the distillation's own steps (eval_steps)."""
    labels = []
    for number, label in enumerate(distilled.labels.tolist()):
        name = class_names[label]
        if distilled.targets.is_floating_point():
            distribution = distilled.targets[number]
            top = int(distribution.argmax())
            name = f"{name} (label {class_names[top]} {float(distribution[top]):.2f})"
        labels.append(name)
    steps = ", ".join(f"{float(s):.3g}" for s in distilled.step_sizes[:6])
    more = ", ..." if len(distilled.step_sizes) > 6 else ""
    trained = training or f"step sizes {steps}{more}"
    caption = (f"{method}: {per_class} synthetic image(s) per class, pixels clipped to [0, 1] for display; "
               f"a network is trained on them with {trained}")
    return Gallery(f"distilled images, {per_class} per class", as_pictures(distilled.images, mean, std), labels,
                   columns=per_class if per_class > 1 else 0, caption=caption, tile_size=DISTILLED_TILE)


OBJECTIVES = {"unrolled": "loss on real images after the inner steps", "gradient_matching": "gradient distance",
              "distribution_matching": "squared distance of class mean embeddings"}


def training_curve(curves: dict[int, list[float]], method: str) -> Chart:
    objective = OBJECTIVES[method]
    length = max(len(c) for c in curves.values())
    return Chart("distillation training curve", list(range(1, length + 1)),
                 {f"{k} per class": curve for k, curve in curves.items()},
                 x_label="outer step", y_label=objective,
                 caption=f"the {objective} at each outer step (each step draws a new initialization "
                         "unless fixed_init is set)")


def accuracy_table(rows: list[tuple[int, str, int, Score]], test_count: int, note: str) -> Table:
    cells = [[k, training_set, images, round(score.mean, 4), round(score.std, 4), len(score.accuracies)]
             for k, training_set, images, score in rows]
    return Table("held-out accuracy of fresh initializations",
                 ["per class", "trained on", "images", "mean accuracy", "std", "initializations"], cells,
                 caption=f"accuracy on {test_count} held-out images never used for distillation; {note}")
