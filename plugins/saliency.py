"""Gradient saliency (Simonyan, Vedaldi, Zisserman 2013, "Deep Inside Convolutional Networks").

The map is |d score_c / d x|, maximised over colour channels: how much a small
change of each pixel would move the class score (the logit, before softmax, as
in the paper, so that other classes do not enter the map).
"""

from __future__ import annotations

import torch

from nnvis_core import Heatmap, Param, Plugin, Scope, hookimpl


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


class GradientSaliency(Plugin):
    name = "saliency"
    title = "Gradient saliency"
    description = (
        "Absolute gradient of the target class score with respect to each input pixel, maximised over "
        "colour channels (Simonyan et al. 2013). Bright pixels are those whose small change would move "
        "the score most; it shows sensitivity, not evidence, and is often noisy."
    )
    scope = Scope.IMAGE
    default_enabled = True
    params = (
        Param("target", str, "predicted", "class to explain: predicted, true, an index or a class name"),
    )

    def run_image(self, ctx, item, params) -> list[Heatmap]:
        target = ctx.target(item, params["target"])
        values = saliency_map(ctx.module, ctx.input(item), target)[0]
        name = ctx.class_names[target]
        return [Heatmap("saliency", values.cpu().numpy(), label="|gradient|", caption=f"towards {name}")]


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(GradientSaliency())
