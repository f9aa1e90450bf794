"""Guided backpropagation (Springenberg et al. 2014, "Striving for Simplicity").

Backward through each ReLU passes the signal only where both the forward input
and the incoming gradient are positive.

>>> from nnvis_plugins.attribution import guided_backprop
>>> maps = guided_backprop.attribute(model, images, target=3)     # (N, 3, H, W)
"""

from __future__ import annotations

import torch
from torch import nn

from nnvis_core import hookimpl
from nnvis_core.toolkit import Target
from nnvis_plugins.attribution import projection
from nnvis_plugins.attribution.projection import Projection, RulePlugin, class_attribution


def attribute(model: nn.Module, inputs: torch.Tensor, target: Target, batch_size: int | None = None) -> torch.Tensor:
    """Guided-backprop map (N, C, H, W) of `target` (index, indices or callable) for a normalized batch."""
    return class_attribution(model, inputs, target, "guided", batch_size)


def project_feature(model: nn.Module, inputs: torch.Tensor, layer: nn.Module | str = "auto",
                    channel: int | None = None) -> Projection:
    """Guided-backprop projection of the largest activation of one channel of `layer` (see projection.py)."""
    return projection.project_feature(model, inputs, layer, channel, "guided")


class GuidedBackprop(RulePlugin):
    name = "guided_backprop"
    title = "Guided backpropagation"
    description = (
        "Springenberg et al. (2014): the target score, or one feature map's strongest activation (mode=feature), "
        "sent back to the pixels passing only positive signal where the forward input was positive too. "
        "Sharp and edge-like, but known to depend little on the higher layers (see sanity_check)."
    )
    rule = "guided"
    params = RulePlugin.make_params()


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(GuidedBackprop())
