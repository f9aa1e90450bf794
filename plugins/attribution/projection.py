"""Backward-rule maps, shared by deconvnet and guided backpropagation.

Two modes (Zeiler & Fergus 2013; Springenberg et al. 2014):

- ``class``: the class score sent back to the pixels with the rule applied at
  every ReLU (max-pool switches are those of the forward pass: the ordinary
  max-pool gradient);
- ``feature``: the projection of one feature map: run the model up to a layer,
  keep only the largest activation of one channel (default: the channel holding
  the largest activation of the image), zero everything else, and send that
  down to the pixels through the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnvis_core import Image, Param
from nnvis_core.toolkit import (
    FAITHFULNESS_STEPS,
    LAYER_PARAM_HELP,
    TARGET,
    AttributionError,
    AttributionPlugin,
    Explanation,
    Target,
    forward_until,
    gradient,
    layer_name,
    reduce_param,
    relu_rule,
    resolve_layer,
    rgb_view,
)


def class_attribution(
    model: nn.Module, inputs: torch.Tensor, target: Target, rule: str, batch_size: int | None = None
) -> torch.Tensor:
    """(N, C, H, W): the target score sent back to the inputs through the ReLU rule."""
    return gradient(model, inputs, target, rule=rule, batch_size=batch_size)


@dataclass
class Projection:
    attribution: torch.Tensor  # (N, C, H, W)
    channel: torch.Tensor  # (N,) the channel projected for each input
    position: torch.Tensor  # (N, 2) row and column of its largest activation in the layer's map
    activation: torch.Tensor  # (N,) the activation kept


def project_feature(
    model: nn.Module,
    inputs: torch.Tensor,
    layer: nn.Module | str = "auto",
    channel: int | None = None,
    rule: str = "deconvnet",
) -> Projection:
    """Project the largest activation of one channel of `layer` down to the inputs.

    layer: a module, a name, 'last_conv', or 'auto' (the last conv's rectified output).
    channel: the feature map to project; None picks, per input, the channel that
    holds the largest activation of the layer.
    """
    module = resolve_layer(model, layer)
    x = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        with relu_rule(model, rule):
            activation = forward_until(model, module, x)
        if activation.dim() != 4:
            raise AttributionError("feature projection needs a layer with (N, C, H, W) output, "
                                   f"got {tuple(activation.shape)}")
        n, k, h, w = activation.shape
        flat = activation.detach().flatten(2)  # (N, K, h*w)
        if channel is None:
            chosen = flat.amax(dim=2).argmax(dim=1)
        else:
            if not 0 <= channel < k:
                raise AttributionError(f"channel {channel} out of range: the layer has {k} channels")
            chosen = torch.full((n,), channel, dtype=torch.long, device=flat.device)
        rows = torch.arange(n, device=flat.device)
        values, where = flat[rows, chosen].max(dim=1)
        seed = torch.zeros_like(flat)
        seed[rows, chosen, where] = values
        (grad,) = torch.autograd.grad(activation, x, grad_outputs=seed.view_as(activation))
    return Projection(grad, chosen, torch.stack([where // w, where % w], dim=1), values)


class RulePlugin(AttributionPlugin):
    """deconvnet and guided backprop: the same plugin with a different rule."""

    rule = "deconvnet"
    label = "reconstruction"

    @classmethod
    def make_params(cls) -> tuple[Param, ...]:
        return (
            TARGET,
            Param("mode", str, "class", "class: towards the target score; feature: project one feature map",
                  choices=("class", "feature")),
            Param("layer", str, "auto", "feature mode: " + LAYER_PARAM_HELP),
            Param("channel", int, -1, "feature mode: the channel; -1 = the one with the largest activation",
                  minimum=-1),
            reduce_param("abs_max"),
            FAITHFULNESS_STEPS,
        )

    def default_layers(self, model) -> list[str]:
        """None: the default class mode propagates to the input; only feature mode reads a layer."""
        return []

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        if params["mode"] == "class":
            attribution = class_attribution(ctx.module, inputs, target, self.rule)[0]
            caption = ""
        else:
            channel = None if params["channel"] < 0 else params["channel"]
            layer = layer_name(ctx, params["layer"])
            projection = project_feature(ctx.module, inputs, ctx.layer(layer), channel, self.rule)
            attribution = projection.attribution[0]
            row, col = projection.position[0].tolist()
            caption = (f"projection of channel {int(projection.channel[0])} of {layer} "
                       f"(activation {float(projection.activation[0]):.3g} at {row},{col})")
        picture = Image(f"{self.name} (RGB)", rgb_view(attribution),
                        caption="the reconstruction as a picture, grey = 0")
        return Explanation(attribution, caption, [picture])
