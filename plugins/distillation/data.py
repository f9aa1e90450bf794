"""The labelled folder as tensors, split into a distillation part and a held-out part per class.

The held-out images never reach the distillation: accuracy measured on them
says how well the synthetic images generalize, not how well they memorize.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from nnvis_core.contract.context import ImageItem


class FolderRefusal(ValueError):
    """The folder cannot be distilled and tested (no labels, too few images): a one-line reason."""


@dataclass
class Split:
    """Normalized (N, C, H, W) inputs and class indices of the two parts, and the classes present."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[int]  # class indices with images in both parts, ascending

    def class_images(self, label: int) -> torch.Tensor:
        return self.train_images[self.train_labels == label]


def labelled_images(items: Iterable[ImageItem], per_class: int, generator: torch.Generator
                    ) -> dict[int, list[torch.Tensor]]:
    """At most `per_class` images of each class (a seeded random choice), in folder order; the
    one-line ValueError when the folder has no labels."""
    by_class: dict[int, list[torch.Tensor]] = {}
    unlabelled = 0
    for item in items:
        if item.true_class is None:
            unlabelled += 1
            continue
        by_class.setdefault(int(item.true_class), []).append(item.tensor)
    if not by_class:
        raise FolderRefusal("dataset_distillation needs labelled images (class subfolders named after the "
                         f"model's classes); none of the {unlabelled} readable images has a label")
    for label, images in by_class.items():
        if len(images) > per_class:
            keep = sorted(torch.randperm(len(images), generator=generator)[:per_class].tolist())
            by_class[label] = [images[i] for i in keep]
    return by_class


def split(by_class: dict[int, list[torch.Tensor]], held_out: float, generator: torch.Generator,
          class_names: list[str]) -> Split:
    """Hold out round(held_out * n) images of each class (at least one, leaving at least one)."""
    too_few = [class_names[label] for label, images in sorted(by_class.items()) if len(images) < 2]
    if too_few:
        raise FolderRefusal(f"dataset_distillation needs at least 2 images per class (one to distil, one to "
                         f"test on); too few in {', '.join(too_few)}")
    if len(by_class) < 2:
        raise FolderRefusal("dataset_distillation needs images of at least 2 classes; the folder has 1")
    parts: dict[str, list] = {"train_images": [], "train_labels": [], "test_images": [], "test_labels": []}
    for label in sorted(by_class):
        images = by_class[label]
        order = torch.randperm(len(images), generator=generator).tolist()
        tested = min(len(images) - 1, max(1, round(held_out * len(images))))
        for rank, index in enumerate(order):
            part = "test" if rank < tested else "train"
            parts[f"{part}_images"].append(images[index])
            parts[f"{part}_labels"].append(label)
    return Split(torch.stack(parts["train_images"]), torch.tensor(parts["train_labels"]),
                 torch.stack(parts["test_images"]), torch.tensor(parts["test_labels"]), sorted(by_class))


def random_real(data: Split, per_class: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` random distillation-part images of each class (all of a class that has fewer)."""
    images, labels = [], []
    for label in data.classes:
        pool = data.class_images(label)
        chosen = torch.randperm(len(pool), generator=generator)[:per_class]
        images.append(pool[chosen])
        labels += [label] * len(chosen)
    return torch.cat(images), torch.tensor(labels)
