"""Guided Grad-CAM (Selvaraju et al. 2017): guided backprop times the upsampled Grad-CAM.

>>> from nnvis_plugins.attribution import guided_gradcam
>>> maps = guided_gradcam.attribute(model, images, target=3, layer="layer4")   # (N, 3, H, W)
"""

from __future__ import annotations

import torch
from torch import nn

from nnvis_core import Image, Param, hookimpl
from nnvis_core.toolkit import (
    FAITHFULNESS_STEPS,
    LAYER_PARAM_HELP,
    TARGET,
    AttributionPlugin,
    Explanation,
    Target,
    gradient,
    layer_name,
    reduce_param,
    rgb_view,
)
from nnvis_plugins.attribution import gradcam


def attribute(model: nn.Module, inputs: torch.Tensor, target: Target, layer: nn.Module | str = "auto",
              upsampling: str = "bilinear", batch_size: int | None = None, strict: bool = False) -> torch.Tensor:
    """(N, C, H, W): guided backprop of `target` times its Grad-CAM at `layer`, upsampled
    (strict: refuse a Grad-CAM that would be constant, see gradcam.check_resolution)."""
    cam = gradcam.attribute(model, inputs, target, layer, upsampling, strict=strict)
    return gradient(model, inputs, target, rule="guided", batch_size=batch_size) * cam


class GuidedGradCAM(AttributionPlugin):
    name = "guided_gradcam"
    title = "Guided Grad-CAM"
    description = (
        "Selvaraju et al. (2017): the guided-backprop map multiplied by the upsampled Grad-CAM, combining "
        "fine detail with class discrimination."
    )
    label = "guided Grad-CAM"
    params = (
        TARGET,
        Param("layer", str, "auto", LAYER_PARAM_HELP),
        Param("upsample", str, "bilinear", "how the Grad-CAM map is brought to the image size",
              choices=gradcam.UPSAMPLING),
        reduce_param("abs_max"),
        FAITHFULNESS_STEPS,
    )

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        layer = layer_name(ctx, params["layer"])
        ctx.layer(layer)  # a clear error for an unknown name
        maps = attribute(ctx.module, inputs, target, layer, params["upsample"], strict=True)
        picture = Image("guided Grad-CAM (RGB)", rgb_view(maps[0]), caption="as a picture, grey = 0")
        return Explanation(maps[0], f"layer {layer}", [picture])


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(GuidedGradCAM())
