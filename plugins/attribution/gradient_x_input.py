"""Gradient x input (Shrikumar et al. 2016): each input value times the gradient of the score.

>>> from nnvis_plugins.attribution import gradient_x_input
>>> maps = gradient_x_input.attribute(model, images, target=3)   # (N, 3, H, W), signed
"""

from __future__ import annotations

import torch
from torch import nn

from nnvis_core import hookimpl
from nnvis_core.toolkit import (
    FAITHFULNESS_STEPS,
    TARGET,
    AttributionPlugin,
    Explanation,
    Target,
    gradient,
    reduce_param,
)


def attribute(model: nn.Module, inputs: torch.Tensor, target: Target, batch_size: int | None = None) -> torch.Tensor:
    """(N, C, H, W): inputs * d score / d inputs."""
    return inputs.detach() * gradient(model, inputs, target, batch_size=batch_size)


class GradientXInput(AttributionPlugin):
    name = "gradient_x_input"
    title = "Gradient x input"
    description = (
        "Each input value (normalized) times the gradient of the target score: a first-order estimate of "
        "each pixel's contribution relative to the all-zero (mean) input. Signed: red supports the class."
    )
    label = "input x gradient"
    params = (TARGET, reduce_param("sum"), FAITHFULNESS_STEPS)

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        # a first-order estimate of the change from the all-zero input: its total is scored against that
        return Explanation(attribute(ctx.module, inputs, target)[0], completes_from=torch.zeros_like(inputs))


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(GradientXInput())
