"""Class maximization (Simonyan et al. 2013; Olah et al. 2017): an image the model finds most like each class.

>>> from nnvis_plugins.featvis.class_maximization import maximize_classes
>>> result = maximize_classes(model, [0, 3], Settings(size=64, steps=128), mean=MEAN, std=STD)
>>> result.images.shape, result.probabilities      # (2, 64, 64, 3), final softmax of each target
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from nnvis_core import Gallery, Param, Plugin, Result, Scope, Table, hookimpl
from nnvis_core.contract.stream import map_batches
from nnvis_core.contract.targets import TargetError, class_index
from nnvis_core.toolkit.featvis import objectives as obj
from nnvis_core.toolkit.featvis.render import Rendering, Settings, render
from nnvis_core.toolkit.featvis.spectrum import high_frequency_share
from nnvis_plugins.featvis.options import describe, optimization_params, plain_settings, settings_from

OBJECTIVES = ("logit", "probability")
ALL_UP_TO = 16  # `auto` renders every class of models with at most this many classes


@dataclass
class ClassImages:
    classes: list[int]
    images: np.ndarray  # (N, H, W, 3) float in [0, 1]
    probabilities: np.ndarray  # (N,) softmax of the target class on the final image
    logits: np.ndarray  # (N,) the target's logit


def class_objective(kind: str, classes: Sequence[int]) -> obj.Objective:
    if kind not in OBJECTIVES:
        raise ValueError(f"class objective must be logit or probability, got {kind!r}")
    return (obj.class_logit if kind == "logit" else obj.class_probability)(list(classes))


def maximize_classes(model: nn.Module, classes: Sequence[int], settings: Settings = Settings(), *,
                     objective: str = "logit", mean: Sequence[float] = (0.0, 0.0, 0.0),
                     std: Sequence[float] = (1.0, 1.0, 1.0), device: torch.device | str = "cpu",
                     batch: int = 16, ctx=None) -> ClassImages:
    """One optimized image per class, `batch` classes per optimization run. With a run's `ctx` (whose
    model is `model`), each run is one of its map_tasks: rendered on the workers of a pooled engine."""
    classes = [int(c) for c in classes]
    chunks = [classes[start:start + batch] for start in range(0, len(classes), batch)]
    tasks = [(objective, chunk, settings, tuple(mean), tuple(std)) for chunk in chunks]
    if ctx is not None:
        renderings: list[Rendering] = list(ctx.map_tasks(render_classes, tasks))
    else:
        renderings = [class_rendering(model, device, task) for task in tasks]
    images = np.concatenate([r.images for r in renderings])
    logits = np.concatenate([r.logits for r in renderings])
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    rows = np.arange(len(classes))
    return ClassImages(classes, images, probabilities[rows, classes], logits[rows, classes])


def class_rendering(model: nn.Module, device: torch.device | str, task: tuple) -> Rendering:
    """One optimization run for a task (objective, classes, settings, mean, std): an image per class."""
    objective, classes, settings, mean, std = task
    return render(model, class_objective(objective, classes), len(classes), settings, mean=mean, std=std,
                  device=device)


def render_classes(ctx, task: tuple) -> Rendering:
    """class_rendering as a RunContext.map_tasks task (module-level, so a worker process can run it)."""
    return class_rendering(ctx.module, ctx.device, task)


def parse_classes(spec: str, class_names: Sequence[str]) -> tuple[list[int] | None, int]:
    """(explicit class list, 0) or (None, K) for `top:K`. `auto` is all classes for small models, else top:8."""
    text = spec.strip()
    if text == "auto":
        return (list(range(len(class_names))), 0) if len(class_names) <= ALL_UP_TO else (None, 8)
    if text == "all":
        return list(range(len(class_names))), 0
    if text.startswith("top:"):
        count = text[4:]
        if not count.isdigit() or int(count) < 1:
            raise TargetError(f"classes {spec!r}: top:K needs a positive whole number K")
        return None, int(count)
    names = [part for part in (p.strip() for p in text.split(",")) if part]
    if not names:
        raise TargetError("classes is empty: use auto, all, top:K or a comma-separated list")
    return list(dict.fromkeys(class_index(name, class_names) for name in names)), 0


def check_classes(value: str) -> str | None:
    """The form of a `classes` value (names are checked against the model when it runs)."""
    text = value.strip()
    if text.startswith("top:") and not (text[4:].isdigit() and int(text[4:]) > 0):
        return "top:K needs a positive whole number K"
    if not text.replace(",", "").strip():
        return "use auto, all, top:K or a comma-separated list of class names or indices"
    return None


def batch_votes(ctx, batch) -> tuple[Counter, np.ndarray]:
    """A batch's predicted classes and summed probabilities (a map_batches function: with a pooled
    engine it runs where the images are decoded, and only the counts come back)."""
    votes = Counter(item.predicted for item in batch)
    return votes, torch.stack([item.probabilities.double() for item in batch]).sum(0).numpy()


def most_predicted(ctx, items, count: int) -> list[int]:
    """The `count` classes the model predicts most often over the folder (ties: higher mean probability)."""
    votes: Counter = Counter()
    mass: np.ndarray | None = None
    for batch, batch_mass in map_batches(ctx, items, batch_votes):
        votes.update(batch)
        mass = batch_mass if mass is None else mass + batch_mass
    if mass is None:
        return []
    ranked = sorted(range(len(mass)), key=lambda c: (-votes[c], -mass[c], c))
    return ranked[:count]


class ClassMaximization(Plugin):
    name = "class_maximization"
    title = "Class maximization"
    description = (
        "For each class, an image optimized to raise the model's score for it (Simonyan et al. 2013), "
        "regularized as in Olah et al. 2017: a Fourier parameterization with decorrelated colour and random "
        "pad, jitter, scale and rotation at every step. The label gives the final probability of the class. "
        "Needs no input image except for classes=top:K, which picks the classes predicted most over the folder."
    )
    scope = Scope.DATASET
    params = (
        Param("classes", str, "auto",
              "auto (every class if at most 16, else top:8), all, top:K (most predicted over the folder), "
              "or a comma-separated list of class names or indices", check=check_classes),
        Param("objective", str, "logit", "maximise the class logit or its softmax probability", choices=OBJECTIVES),
        *optimization_params(),
    )

    def run_dataset(self, ctx, items, params) -> Result:
        explicit, top = parse_classes(params["classes"], ctx.class_names)
        classes = explicit if explicit is not None else most_predicted(ctx, items, top)
        settings = settings_from(ctx, params)
        preprocess = ctx.model.preprocess
        common = dict(objective=params["objective"], mean=preprocess.mean, std=preprocess.std, device=ctx.device,
                      batch=ctx.batch_size, ctx=ctx)
        made = maximize_classes(ctx.module, classes, settings, **common)
        names = [ctx.class_names[c] for c in classes]
        labels = [f"{name} {p:.2f}" for name, p in zip(names, made.probabilities)]
        artifacts = [Gallery("class images", list(made.images), labels=labels,
                             caption=f"label: the class and its final probability; {describe(settings)}")]
        rows = [[name, c, float(p), float(z), high_frequency_share(image)]
                for name, c, p, z, image in zip(names, classes, made.probabilities, made.logits, made.images)]
        columns = ["class", "index", "probability", "logit", "high-frequency share"]
        metrics = {"min_probability": float(made.probabilities.min()),
                   "mean_probability": float(made.probabilities.mean())}
        if params["show_plain"]:
            plain = maximize_classes(ctx.module, classes, plain_settings(settings), **common)
            artifacts.append(Gallery("plain optimization, for comparison", list(plain.images),
                                     labels=[f"{n} {p:.2f}" for n, p in zip(names, plain.probabilities)],
                                     caption="pixels, RGB, no transforms, no penalties: high-frequency patterns "
                                             "the model responds to, not a picture of the class"))
            for row, image in zip(rows, plain.images):
                row.append(high_frequency_share(image))
            columns.append("plain: high-frequency share")
        artifacts.append(Table("final scores", columns, rows,
                               caption="high-frequency share: spectral power above a quarter cycle per pixel"))
        return Result(artifacts, metrics)


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(ClassMaximization())
