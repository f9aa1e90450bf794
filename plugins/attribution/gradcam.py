"""Grad-CAM (Selvaraju et al. 2017): a layer's feature maps weighted by their mean gradient.

cam = ReLU(sum_k mean_ij(d score / d A_k) * A_k), upsampled to the input size.

>>> from nnvis_plugins.attribution import gradcam
>>> cams = gradcam.attribute(model, images, target=3, layer="layer4")   # (N, 1, H, W)
"""

from __future__ import annotations

import torch
from torch import nn

from nnvis_core import hookimpl
from nnvis_core.toolkit import (
    LAYER_PARAM_HELP,
    Target,
    default_layer,  # noqa: F401 - gradcam.default_layer(model) is part of this module's API
)
from nnvis_core.toolkit.cams import (
    UPSAMPLING,  # noqa: F401 - part of this module's API (guided Grad-CAM's choices)
    CamPlugin,
    LayerReading,
    check_resolution,
    read_layer,
    upsample,
    weighted_sum,
)

LAYER_HELP = LAYER_PARAM_HELP


def layer_attribute(model: nn.Module, inputs: torch.Tensor, target: Target, layer: nn.Module | str = "auto",
                    relu: bool = True) -> torch.Tensor:
    """(N, 1, h, w) Grad-CAM at the layer's own resolution.

    The layer may give feature maps, tokens (a ViT block: the patch tokens on
    their grid, prefix tokens dropped) or channels-last maps (Swin): its output
    and its gradient are both read as (N, C, h, w) maps (nnvis_core.toolkit.output_layout).
    """
    cam, _ = _layer_cam(model, inputs, target, layer)
    return cam.relu() if relu else cam


def _layer_cam(model: nn.Module, inputs: torch.Tensor, target: Target,
               layer: nn.Module | str) -> tuple[torch.Tensor, LayerReading]:
    reading = read_layer(model, inputs, target, layer, method="Grad-CAM")
    return weighted_sum(reading.gradients.mean(dim=(2, 3)), reading.maps), reading


def attribute(model: nn.Module, inputs: torch.Tensor, target: Target, layer: nn.Module | str = "auto",
              upsampling: str | None = "bilinear", relu: bool = True, strict: bool = False) -> torch.Tensor:
    """(N, 1, H, W) Grad-CAM upsampled to the input size (upsampling=None: the layer's size).

    strict: refuse maps that would be constant (check_resolution), as the plugins do; off for
    callers that compare maps, such as the sanity check, where a zero map is a finding."""
    cam, reading = _layer_cam(model, inputs, target, layer)
    cam = cam.relu() if relu else cam
    if strict:
        check_resolution(cam, layer if isinstance(layer, str) else type(layer).__name__, reading.reached, model)
    return cam if upsampling is None else upsample(cam, tuple(inputs.shape[-2:]), upsampling)


class GradCAM(CamPlugin):
    name = "gradcam"
    title = "Grad-CAM"
    description = (
        "Selvaraju et al. (2017): the feature maps of a convolutional layer (default: the last) weighted by "
        "the spatial mean of the target score's gradient, summed, rectified and upsampled to the image. Coarse "
        "but class-discriminative."
    )
    label = "Grad-CAM"

    def layer_cam(self, model, inputs, target, layer, params):
        return _layer_cam(model, inputs, target, layer)


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(GradCAM())
