"""The learned synthetic set: images, their labels, and how a network is trained on them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from nnvis_plugins.distillation.data import Split

STARTS = ("noise", "real")


@dataclass
class Settings:
    """What both methods share; `lr` is the initial (unrolled) or fixed (matching) step size."""

    inner_steps: int = 10
    outer_steps: int = 50
    lr: float = 0.01
    image_lr: float = 0.05
    real_batch: int = 64
    start: str = "noise"
    soft_labels: bool = False
    fixed_init: bool = False


@dataclass
class Distilled:
    """The result of a distillation: (M, C, H, W) images in the model's input space, their classes,
    the training targets (class indices, or (M, classes) label distributions with soft labels), the
    step sizes a network is trained with on them, and the outer objective per outer step."""

    images: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor
    step_sizes: torch.Tensor
    curve: list[float] = field(default_factory=list)
    fixed_seed: int | None = None  # the one initialization a fixed-init distillation was made for


def draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))


def starting_images(data: Split, per_class: int, start: str, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` images per class: standard-normal noise in the model's input space (Wang et al.)
    or random real images of the class, cycled when the class has fewer (Zhao et al.)."""
    if start not in STARTS:
        raise ValueError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
    labels = torch.tensor([label for label in data.classes for _ in range(per_class)])
    if start == "noise":
        shape = (len(labels), *data.train_images.shape[1:])
        return torch.randn(shape, generator=generator, dtype=data.train_images.dtype), labels
    chosen = []
    for label in data.classes:
        pool = data.class_images(label)
        order = torch.randperm(len(pool), generator=generator)
        chosen.append(pool[order[torch.arange(per_class) % len(pool)]])
    return torch.cat(chosen).clone(), labels


def soft_label_logits(labels: torch.Tensor, classes: int, confidence: float = 0.9) -> torch.Tensor:
    """Logits whose softmax puts `confidence` on each image's class and the rest evenly elsewhere."""
    rest = math.log((1 - confidence) / max(1, classes - 1))
    logits = torch.full((len(labels), classes), rest)
    logits[torch.arange(len(labels)), labels] = math.log(confidence)
    return logits


def real_batch(data: Split, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of distillation-part images (all of them when there are fewer)."""
    if len(data.train_images) <= size:
        return data.train_images, data.train_labels
    chosen = torch.randperm(len(data.train_images), generator=generator)[:size]
    return data.train_images[chosen], data.train_labels[chosen]
