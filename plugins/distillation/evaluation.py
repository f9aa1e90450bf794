"""How well a training set teaches fresh initializations: held-out accuracy, mean and spread.

Every training set of a comparison (distilled, random real, the full split) is
used from the same initializations with the same training, so the differences
between rows are the training sets' alone. The training is either the
distillation's own (its steps and step sizes, as Wang et al. evaluate) or a
long one (`LongTraining`: Adam on minibatches, as Zhao et al. evaluate).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from nnvis_plugins.distillation.architecture import Architecture
from nnvis_plugins.distillation.data import Split
from nnvis_plugins.distillation.training import accuracy, train, train_adam


@dataclass
class Score:
    """Held-out accuracies, one per initialization."""

    accuracies: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0


@dataclass(frozen=True)
class LongTraining:
    """`steps` Adam steps of learning rate `lr` on minibatches of `batch` images."""

    steps: int
    lr: float = 1e-3
    batch: int = 64

    def describe(self) -> str:
        return f"{self.steps} Adam steps (lr {self.lr:g}, batches of {self.batch})"


def held_out_score(arch: Architecture, data: Split, images: torch.Tensor, targets: torch.Tensor,
                   step_sizes: torch.Tensor, seeds: list[int], long: LongTraining | None = None) -> Score:
    """Train each initialization in `seeds` on (images, targets), with the step sizes or, given `long`,
    that long training, and test it on the held-out part."""
    device, dtype = arch.device, arch.dtype
    images, targets = images.to(device, dtype), targets.to(device)
    if targets.is_floating_point():
        targets = targets.to(dtype)
    test_images, test_labels = data.test_images.to(device, dtype), data.test_labels.to(device)
    accuracies = []
    for seed in seeds:
        if long is None:
            trained = train(arch.forward, arch.fresh(seed), images, targets, step_sizes)
        else:
            trained = train_adam(arch.forward, arch.fresh(seed), images, targets, long.steps, long.lr, long.batch,
                                 seed)
        accuracies.append(accuracy(arch.forward, trained, test_images, test_labels))
    return Score(accuracies)
