"""Deconvnet (Zeiler & Fergus 2013, "Visualizing and Understanding Convolutional Networks").

Backward through each ReLU passes the positive part of the incoming signal,
whatever the forward sign; max-pool switches come from the forward pass.

>>> from nnvis_plugins.attribution import deconvnet
>>> maps = deconvnet.attribute(model, images, target=3)           # (N, 3, H, W)
>>> proj = deconvnet.project_feature(model, images, "features.12") # one feature map
"""

from __future__ import annotations

import torch
from torch import nn

from nnvis_core import hookimpl
from nnvis_core.toolkit import Target
from nnvis_plugins.attribution import projection
from nnvis_plugins.attribution.projection import Projection, RulePlugin, class_attribution


def attribute(model: nn.Module, inputs: torch.Tensor, target: Target, batch_size: int | None = None) -> torch.Tensor:
    """Deconvnet map (N, C, H, W) of `target` (index, indices or callable) for a normalized batch."""
    return class_attribution(model, inputs, target, "deconvnet", batch_size)


def project_feature(model: nn.Module, inputs: torch.Tensor, layer: nn.Module | str = "auto",
                    channel: int | None = None) -> Projection:
    """Deconvnet projection of the largest activation of one channel of `layer` (see projection.py)."""
    return projection.project_feature(model, inputs, layer, channel, "deconvnet")


class Deconvnet(RulePlugin):
    name = "deconvnet"
    title = "Deconvnet"
    description = (
        "Zeiler & Fergus (2013): the target score, or one feature map's strongest activation (mode=feature), "
        "sent back to the pixels passing only the positive part of the signal at every ReLU. Shows the "
        "patterns a unit responds to; largely class-insensitive."
    )
    rule = "deconvnet"
    params = RulePlugin.make_params()


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(Deconvnet())
