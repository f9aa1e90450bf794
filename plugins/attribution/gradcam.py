"""Grad-CAM (Selvaraju et al. 2017): a layer's feature maps weighted by their mean gradient.

cam = ReLU(sum_k mean_ij(d score / d A_k) * A_k), upsampled to the input size.

>>> from nnvis_plugins.attribution import gradcam
>>> cams = gradcam.attribute(model, images, target=3, layer="layer4")   # (N, 1, H, W)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnvis_core import Param, hookimpl
from nnvis_core.toolkit import (
    FAITHFULNESS_STEPS,
    LAYER_PARAM_HELP,
    TARGET,
    AttributionError,
    AttributionPlugin,
    Explanation,
    Layout,
    LayoutError,
    Target,
    captured_output,
    default_layer,  # noqa: F401 - gradcam.default_layer(model) is part of this module's API
    layer_name,
    output_layout,
    readable_advice,
    resolve_layer,
    target_scores,
)

UPSAMPLING = ("bilinear", "nearest")
LAYER_HELP = LAYER_PARAM_HELP


def layer_attribute(model: nn.Module, inputs: torch.Tensor, target: Target, layer: nn.Module | str = "auto",
                    relu: bool = True) -> torch.Tensor:
    """(N, 1, h, w) Grad-CAM at the layer's own resolution.

    The layer may give feature maps, tokens (a ViT block: the patch tokens on
    their grid, prefix tokens dropped) or channels-last maps (Swin): its output
    and its gradient are both read as (N, C, h, w) maps (nnvis_core.toolkit.output_layout).
    """
    return _layer_cam(model, inputs, target, layer, relu)[0]


def _layer_cam(model: nn.Module, inputs: torch.Tensor, target: Target, layer: nn.Module | str,
               relu: bool) -> tuple[torch.Tensor, Layout, bool]:
    """The cam, the layer's layout, and whether the target's gradient reaches any position of it."""
    module = resolve_layer(model, layer)
    x = inputs.detach().clone().requires_grad_(True)  # so the graph exists even with frozen parameters
    with torch.enable_grad():
        with captured_output(module) as record:
            output = model(x)
        if "output" not in record:
            raise AttributionError(f"layer {type(module).__name__} was not run by the model's forward pass")
        activation = record["output"]
        try:
            layout = output_layout(model, activation, tuple(inputs.shape[-2:]))
        except LayoutError as error:
            raise AttributionError(f"Grad-CAM: {error}; {readable_advice(model)}") from None
        (grads,) = torch.autograd.grad(target_scores(output, target).sum(), activation)
    maps, grads = layout.to_map(activation.detach()), layout.to_map(grads)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = (weights * maps).sum(dim=1, keepdim=True)
    return (cam.relu() if relu else cam), layout, bool(grads.abs().amax() > 0)


def check_resolution(cam: torch.Tensor, layer: object, reached: bool = True, model: nn.Module | None = None) -> None:
    """Refuse a map that could only be constant. A 1x1 layer upsamples to the same value everywhere
    (Inception v3's last block at 96 px, any global-pooled layer). A layer whose positions the target's
    gradient does not reach gives zero whatever the image (a ViT's last MLP: after the last attention only
    the class token feeds the head). A rectified map that is zero where the gradient does reach is kept:
    towards a class the image shows no evidence for, that is the answer. Given the model, the refusal
    names a layer that can be read on it (or says there is none)."""
    advice = readable_advice(model) if model is not None else "name another layer (see nnvis layers)"
    if cam.shape[-2:] == (1, 1):
        raise AttributionError(f"Grad-CAM: layer {layer} is 1x1 at this input size, so its map would be constant "
                               f"(it comes after the global pooling, or the input is too small); {advice}")
    if not reached:
        raise AttributionError(f"Grad-CAM: the target's gradient is zero at every position of layer {layer} "
                               "(nothing after it reads them: in a ViT, only the class token reaches the head "
                               f"after the last attention); {advice}")


def upsample(cam: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    if mode not in UPSAMPLING:
        raise ValueError(f"unknown upsampling {mode!r}; use bilinear or nearest")
    if tuple(cam.shape[-2:]) == tuple(size):
        return cam
    return F.interpolate(cam, size=size, mode=mode) if mode == "nearest" else F.interpolate(
        cam, size=size, mode=mode, align_corners=False)


def attribute(model: nn.Module, inputs: torch.Tensor, target: Target, layer: nn.Module | str = "auto",
              upsampling: str | None = "bilinear", relu: bool = True, strict: bool = False) -> torch.Tensor:
    """(N, 1, H, W) Grad-CAM upsampled to the input size (upsampling=None: the layer's size).

    strict: refuse maps that would be constant (check_resolution), as the plugins do; off for
    callers that compare maps, such as the sanity check, where a zero map is a finding."""
    cam, _, reached = _layer_cam(model, inputs, target, layer, relu)
    if strict:
        check_resolution(cam, layer if isinstance(layer, str) else type(layer).__name__, reached, model)
    return cam if upsampling is None else upsample(cam, tuple(inputs.shape[-2:]), upsampling)


class GradCAM(AttributionPlugin):
    name = "gradcam"
    title = "Grad-CAM"
    description = (
        "Selvaraju et al. (2017): the feature maps of a convolutional layer (default: the last) weighted by "
        "the spatial mean of the target score's gradient, summed, rectified and upsampled to the image. Coarse "
        "but class-discriminative."
    )
    label = "Grad-CAM"
    params = (
        TARGET,
        Param("layer", str, "auto", LAYER_HELP),
        Param("upsample", str, "bilinear", "how the layer's map is brought to the image size", choices=UPSAMPLING),
        FAITHFULNESS_STEPS,
    )

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        layer = layer_name(ctx, params["layer"])
        cam, layout, reached = _layer_cam(ctx.module, inputs, target, ctx.layer(layer), True)
        check_resolution(cam, layer, reached, ctx.module)
        h, w = cam.shape[-2:]
        full = upsample(cam, tuple(inputs.shape[-2:]), params["upsample"])
        read = "" if layout.kind == "map" else f", {layout.describe()}"
        return Explanation(full[0, 0], f"layer {layer} ({h}x{w}{read})")


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(GradCAM())
