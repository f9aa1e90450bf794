"""What every class activation map is made of: a layer's maps, the target's gradient at them,
and the checks that keep a map from meaning nothing.

Grad-CAM and its family (Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, Score-CAM,
Ablation-CAM, Eigen-CAM, ...) differ only in how they weigh the channels of one
layer. Each reads the layer the same way: its output as (N, C, h, w) maps,
whether it is a convnet's feature maps, a ViT's patch tokens (prefix tokens
dropped) or a Swin stage's channels-last maps (:func:`output_layout`), and the
gradient of the target score read the same way. :class:`CamPlugin` is the card
they share: the layer parameter, the rectified map upsampled to the image, and a
caption naming the layer.

    class MyCam(CamPlugin):
        name, title, description = "my_cam", "My CAM", "..."

        def layer_cam(self, model, inputs, target, layer, params):
            reading = read_layer(model, inputs, target, layer)
            return weighted_sum(reading.gradients.amax((2, 3)), reading.maps), reading
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nnvis_core.contract.params import Param
from nnvis_core.models.layers import readable_advice, resolve_layer
from nnvis_core.models.outputs import MAP, Layout, LayoutError, output_layout
from nnvis_core.toolkit.attribution import (
    FAITHFULNESS_STEPS,
    LAYER_PARAM_HELP,
    TARGET,
    AttributionPlugin,
    Explanation,
    layer_name,
)
from nnvis_core.toolkit.hooks import captured_output
from nnvis_core.toolkit.scoring import MEMORY_MB
from nnvis_core.toolkit.targets import AttributionError, Target, target_scores

UPSAMPLING = ("bilinear", "nearest")


@dataclass
class LayerReading:
    """One forward (and backward) pass read at a layer."""

    maps: torch.Tensor  # (N, C, h, w): the layer's output as maps, detached
    gradients: torch.Tensor | None  # (N, C, h, w): d target score / d output as maps; None when not asked
    layout: Layout  # how the layer's own output is laid out (to write an altered map back)
    output: torch.Tensor  # (N, classes): the model's output for the unaltered input, detached
    scores: torch.Tensor  # (N,): the target's scores in `output`
    reached: bool  # whether the gradient reaches any position of the layer (True without gradients)


def read_layer(model: nn.Module, inputs: torch.Tensor, target: Target, layer: nn.Module | str,
               gradients: bool = True, method: str = "CAM") -> LayerReading:
    """The layer's output and (with `gradients`) the target score's gradient there, both as (N, C, h, w).

    `method` names the caller in a refusal (a layer whose output cannot be read as maps)."""
    module = resolve_layer(model, layer)
    x = inputs.detach().clone().requires_grad_(gradients)  # the graph exists even with frozen parameters
    with torch.set_grad_enabled(gradients):
        with captured_output(module) as record:
            output = model(x)
        if "output" not in record:
            raise AttributionError(f"layer {type(module).__name__} was not run by the model's forward pass")
        activation = record["output"]
        try:
            layout = output_layout(model, activation, tuple(inputs.shape[-2:]))
        except LayoutError as error:
            raise AttributionError(f"{method}: {error}; {readable_advice(model)}") from None
        scores = target_scores(output, target)
        grads = torch.autograd.grad(scores.sum(), activation)[0] if gradients else None
    grad_maps = None if grads is None else layout.to_map(grads)
    reached = grad_maps is None or bool(grad_maps.abs().amax() > 0)
    return LayerReading(layout.to_map(activation.detach()), grad_maps, layout, output.detach(), scores.detach(),
                        reached)


def weighted_sum(weights: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """(N, 1, h, w): sum over channels of weight x map; weights (N, C) per channel or (N, C, h, w) per position."""
    if weights.dim() == 2:
        weights = weights[:, :, None, None]
    return (weights * maps).sum(dim=1, keepdim=True)


def check_resolution(cam: torch.Tensor, layer: object, reached: bool = True, model: nn.Module | None = None,
                     method: str = "Grad-CAM") -> None:
    """Refuse a map that could only be constant. A 1x1 layer upsamples to the same value everywhere
    (Inception v3's last block at 96 px, any global-pooled layer). A layer whose positions the target's
    gradient does not reach gives zero whatever the image (a ViT's last MLP: after the last attention only
    the class token feeds the head). A rectified map that is zero where the gradient does reach is kept:
    towards a class the image shows no evidence for, that is the answer. Given the model, the refusal
    names a layer that can be read on it (or says there is none)."""
    advice = readable_advice(model) if model is not None else "name another layer (see nnvis layers)"
    if cam.shape[-2:] == (1, 1):
        raise AttributionError(f"{method}: layer {layer} is 1x1 at this input size, so its map would be constant "
                               f"(it comes after the global pooling, or the input is too small); {advice}")
    if not reached:
        raise AttributionError(f"{method}: the target's gradient is zero at every position of layer {layer} "
                               "(nothing after it reads them: in a ViT, only the class token reaches the head "
                               f"after the last attention); {advice}")


def upsample(cam: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """(N, 1, h, w) brought to `size`: bilinear without aligned corners (Grad-CAM's), or nearest."""
    if mode not in UPSAMPLING:
        raise ValueError(f"unknown upsampling {mode!r}; use bilinear or nearest")
    if tuple(cam.shape[-2:]) == tuple(size):
        return cam
    return F.interpolate(cam, size=size, mode=mode) if mode == "nearest" else F.interpolate(
        cam, size=size, mode=mode, align_corners=False)


def map_size(cam: torch.Tensor, layout: Layout) -> str:
    """'7x7', or '14x14, tokens (1 prefix token dropped, 14x14 patches)': what a caption says of the map."""
    h, w = cam.shape[-2:]
    return f"{h}x{w}" if layout.kind == MAP else f"{h}x{w}, {layout.describe()}"


def channel_dim(layout: Layout) -> int:
    """Where the channels are in the layer's own output: dim 1 of feature maps, the last dim otherwise."""
    return 1 if layout.kind == MAP else -1


LAYER = Param("layer", str, "auto", LAYER_PARAM_HELP)
UPSAMPLE = Param("upsample", str, "bilinear", "how the layer's map is brought to the image size", choices=UPSAMPLING)


def memory_param(copies: str) -> Param:
    """`memory_mb`, for a CAM that runs one forward pass per channel on `copies` of the image."""
    return Param("memory_mb", float, float(MEMORY_MB), f"memory for one chunk of {copies} (MiB)",
                 minimum=1.0, maximum=1_000_000.0)


class CamPlugin(AttributionPlugin):
    """A class activation map at one layer: subclasses implement :meth:`layer_cam`.

    The card shows the map rectified (as every CAM paper does) and upsampled to the
    image, with the layer, its size and its layout in the caption; a 1x1 layer, or
    one the target's gradient does not reach, is refused (:func:`check_resolution`)."""

    label = "class activation"
    params = (TARGET, LAYER, UPSAMPLE, FAITHFULNESS_STEPS)
    uses_gradients = True  # False: the method needs no gradient, so an unreached layer is not refused

    def layer_cam(self, model: nn.Module, inputs: torch.Tensor, target: Target, layer: str,
                  params: dict[str, Any]) -> tuple[torch.Tensor, LayerReading]:
        """(N, 1, h, w) unrectified map at the layer's resolution (the layer named as `nnvis layers` lists
        it), and the reading it was made from."""
        raise NotImplementedError

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        layer = layer_name(ctx, params["layer"])
        cam, reading = self.layer_cam(ctx.module, inputs, target, layer, params)
        cam = cam.relu()
        check_resolution(cam, layer, reading.reached or not self.uses_gradients, ctx.module, self.title)
        full = upsample(cam, tuple(inputs.shape[-2:]), params["upsample"])
        return Explanation(full[0, 0], f"layer {layer} ({map_size(cam, reading.layout)})")
