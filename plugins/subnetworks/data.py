"""The labelled folder as tensors, in a part to search subnetworks on and a held-out part."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from nnvis_core.contract.context import ImageItem


class FolderRefusal(ValueError):
    """The folder cannot be used (no labels, too few images): a one-line reason for the card."""


@dataclass
class Parts:
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    own_split: bool  # the folder's own train/ and test/ folders, not a drawn split


def labelled_parts(items: Iterable[ImageItem], held_out: float, max_per_class: int,
                   generator: torch.Generator) -> Parts:
    """The folder's own split when its images lie under train/ and test/ (as `nnvis demo digits` writes
    them), else a seeded per-class split holding out `held_out` of each class; at most `max_per_class`
    images of each class in each part (a seeded choice)."""
    own: dict[str, dict[int, list[torch.Tensor]]] = {"train": {}, "test": {}}
    pooled: dict[int, list[torch.Tensor]] = {}
    for item in items:
        if item.true_class is None:
            continue
        part = item.record.relpath.split("/", 1)[0]
        if part in own:
            own[part].setdefault(int(item.true_class), []).append(item.tensor)
        pooled.setdefault(int(item.true_class), []).append(item.tensor)
    if not pooled:
        raise FolderRefusal("hidden_subnetwork needs labelled images (class subfolders named after the model's "
                            "classes); none has a label")
    if len(pooled) < 2:
        raise FolderRefusal("hidden_subnetwork needs images of at least 2 classes; the folder has 1")
    if own["train"] and own["test"]:
        train, test = _capped(own["train"], max_per_class, generator), _capped(own["test"], max_per_class, generator)
        return Parts(*_stack(train), *_stack(test), own_split=True)
    train, test = {}, {}
    for label, images in sorted(pooled.items()):
        if len(images) < 2:
            raise FolderRefusal(f"hidden_subnetwork needs at least 2 images of each class; class {label} has 1")
        order = torch.randperm(len(images), generator=generator).tolist()
        tested = min(len(images) - 1, max(1, round(held_out * len(images))))
        test[label] = [images[i] for i in order[:tested]]
        train[label] = [images[i] for i in order[tested:]]
    train, test = _capped(train, max_per_class, generator), _capped(test, max_per_class, generator)
    return Parts(*_stack(train), *_stack(test), own_split=False)



def _capped(by_class: dict[int, list[torch.Tensor]], cap: int, generator: torch.Generator
            ) -> dict[int, list[torch.Tensor]]:
    capped = {}
    for label, images in sorted(by_class.items()):
        keep = sorted(torch.randperm(len(images), generator=generator)[:cap].tolist())
        capped[label] = [images[i] for i in keep]
    return capped


def _stack(by_class: dict[int, list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    images = [image for label in sorted(by_class) for image in by_class[label]]
    labels = [label for label in sorted(by_class) for _ in by_class[label]]
    return torch.stack(images), torch.tensor(labels)
