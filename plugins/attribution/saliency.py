"""Gradient saliency (Simonyan, Vedaldi, Zisserman 2013, "Deep Inside Convolutional Networks").

The map is |d score_c / d x|, maximised over colour channels: how much a small
change of each pixel would move the class score (the logit, before softmax, as
in the paper, so that other classes do not enter the map). It is an attribution
plugin like the others, so its card carries the deletion/insertion and mask metrics
and it takes its row in the report's method leaderboard.
"""

from __future__ import annotations

import torch

from nnvis_core import hookimpl
from nnvis_core.toolkit import (
    FAITHFULNESS_STEPS,
    TARGET,
    AttributionPlugin,
    Explanation,
)


def input_gradient(model: torch.nn.Module, inputs: torch.Tensor, target: int) -> torch.Tensor:
    """d logit[target] / d inputs for a (N, 3, H, W) batch, model untouched otherwise."""
    inputs = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        scores = model(inputs)[:, target]
        (gradient,) = torch.autograd.grad(scores.sum(), inputs)
    return gradient


def saliency_map(model: torch.nn.Module, inputs: torch.Tensor, target: int) -> torch.Tensor:
    """(N, H, W): absolute input gradient, max over colour channels."""
    return input_gradient(model, inputs, target).abs().amax(dim=1)


class GradientSaliency(AttributionPlugin):
    name = "saliency"
    title = "Gradient saliency"
    description = (
        "Absolute gradient of the target class score with respect to each input pixel, maximised over "
        "colour channels (Simonyan et al. 2013). Bright pixels are those whose small change would move "
        "the score most; it shows sensitivity, not evidence, and is often noisy."
    )
    default_enabled = True
    label = "|gradient|"
    params = (TARGET, FAITHFULNESS_STEPS)

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        return Explanation(saliency_map(ctx.module, inputs, target)[0])


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(GradientSaliency())
