"""Training the scores of a subnetwork, and its dense baseline, with the same recipe.

The paper's recipe: SGD with momentum 0.9 and weight decay 5e-4, learning rate 0.1 with
a cosine decay, on minibatches. Both trainings run the network in training mode, so
BatchNorm running statistics update; the subnetwork's weights never change, the dense
network's do (from the same initialization).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nnvis_plugins.subnetworks.edgepopup import forward


@dataclass(frozen=True)
class Recipe:
    epochs: int = 10
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch: int = 128


def _epochs(parameters: list[torch.Tensor], loss_of, count: int, recipe: Recipe, seed: int) -> list[float]:
    """Run the recipe over `count` examples: loss_of(indices) gives a minibatch's loss. Mean loss per epoch."""
    optimizer = torch.optim.SGD(parameters, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    steps = max(1, recipe.epochs * -(-count // recipe.batch))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    curve = []
    for _ in range(recipe.epochs):
        order, total = torch.randperm(count, generator=generator), 0.0
        for start in range(0, count, recipe.batch):
            chosen = order[start:start + recipe.batch]
            with torch.enable_grad():
                loss = loss_of(chosen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(chosen)
        curve.append(total / count)
    return curve


def train_scores(frozen: nn.Module, scores: dict[str, torch.Tensor], keep: float, images: torch.Tensor,
                 labels: torch.Tensor, recipe: Recipe, seed: int) -> list[float]:
    """Edge-popup: the scores learn which `keep` share of each layer's frozen weights to use."""
    frozen.train()
    try:
        return _epochs(list(scores.values()),
                       lambda chosen: F.cross_entropy(forward(frozen, scores, keep, images[chosen]), labels[chosen]),
                       len(images), recipe, seed)
    finally:
        frozen.eval()


def train_dense(frozen: nn.Module, images: torch.Tensor, labels: torch.Tensor, recipe: Recipe,
                seed: int) -> tuple[nn.Module, list[float]]:
    """The baseline: every weight of the same initialization trained with the same recipe."""
    dense = copy.deepcopy(frozen)
    for parameter in dense.parameters():
        parameter.requires_grad_(True)
    dense.train()
    curve = _epochs(list(dense.parameters()),
                    lambda chosen: F.cross_entropy(dense(images[chosen]), labels[chosen]), len(images), recipe, seed)
    return dense.eval(), curve


@torch.no_grad()
def accuracy(model, images: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    """Share of `images` whose most probable class is `labels`; `model` is a module or a callable."""
    correct = sum(int((model(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum())
                  for i in range(0, len(images), batch))
    return correct / max(1, len(images))
