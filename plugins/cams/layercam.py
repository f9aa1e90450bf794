"""LayerCAM (Jiang et al. 2021): positive gradients as per-position weights, and maps of several layers fused.

One layer:    cam_ij = sum_k ReLU(g_kij) * A_kij
Several:      each layer's rectified cam scaled as tanh(gamma * cam / max(cam)) (the paper's eq. 9,
              gamma = 2), brought to the largest layer's size and fused by the element-wise maximum.

Per-position weights keep a shallow layer's detail that a channel-wide weight would blur,
so LayerCAM can be read at early layers, and the fused map joins their detail to the
last layer's class evidence.

>>> from nnvis_plugins.cams import layercam
>>> cam, _ = layercam.layer_attribute(model, images, target=3, layer="layer4")   # (N, 1, h, w)
>>> fused = layercam.fused(model, images, 3, ["layer2", "layer3", "layer4"])        # (N, 1, h2, w2)
"""

from __future__ import annotations

import torch

from nnvis_core import Param, hookimpl
from nnvis_core.toolkit import FAITHFULNESS_STEPS, TARGET, Explanation, Target, layer_name
from nnvis_core.toolkit.cams import (
    LAYER,
    UPSAMPLE,
    CamPlugin,
    LayerReading,
    check_resolution,
    map_size,
    read_layer,
    upsample,
)

GAMMA = 2.0


def layer_attribute(model, inputs: torch.Tensor, target: Target, layer="auto") -> tuple[torch.Tensor, LayerReading]:
    """(N, 1, h, w) unrectified LayerCAM at the layer's resolution, and the layer's reading."""
    reading = read_layer(model, inputs, target, layer, method="LayerCAM")
    return (reading.gradients.relu() * reading.maps).sum(dim=1, keepdim=True), reading


def scaled(cam: torch.Tensor, gamma: float = GAMMA) -> torch.Tensor:
    """tanh(gamma * cam / max(cam)) per image, of a rectified cam (an all-zero cam stays zero)."""
    peak = cam.amax(dim=(2, 3), keepdim=True)
    return torch.tanh(gamma * cam / torch.where(peak > 0, peak, 1))


def fuse(cams: list[torch.Tensor], gamma: float = GAMMA) -> torch.Tensor:
    """Rectified cams of several layers, scaled, brought to the largest one's size (bilinear) and fused by
    the element-wise maximum."""
    size = max((tuple(cam.shape[-2:]) for cam in cams), key=lambda hw: hw[0] * hw[1])
    return torch.stack([upsample(scaled(cam, gamma), size) for cam in cams]).amax(dim=0)


def fused(model, inputs: torch.Tensor, target: Target, layers: list, gamma: float = GAMMA) -> torch.Tensor:
    """(N, 1, h, w) LayerCAM fused over `layers` (at the largest one's resolution)."""
    return fuse([layer_attribute(model, inputs, target, layer)[0].relu() for layer in layers], gamma)


def layer_names(spec: str) -> list[str]:
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise ValueError(f"layer: expected one layer name or several, comma-separated, got {spec!r}")
    return names


class LayerCAM(CamPlugin):
    name = "layercam"
    title = "LayerCAM"
    description = (
        "Jiang et al. (2021): each position of a layer's maps weighted by the positive part of the target's "
        "gradient there, summed over channels, so that early layers give fine, class-specific maps. Name "
        "several layers, comma-separated (layer=layer2,layer3,layer4), to fuse them as the paper does: each "
        "scaled by tanh(2 x cam / its max), fused by the element-wise maximum at the finest layer's size."
    )
    label = "LayerCAM"
    params = (
        TARGET,
        Param("layer", str, "auto", LAYER.help + "; several, comma-separated, are fused"),
        UPSAMPLE,
        FAITHFULNESS_STEPS,
    )

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        names = [layer_name(ctx, name) for name in layer_names(params["layer"])]
        cams, sizes = [], []
        for name in names:
            cam, reading = layer_attribute(ctx.module, inputs, target, name)
            cam = cam.relu()
            check_resolution(cam, name, reading.reached, ctx.module, self.title)
            cams.append(cam)
            sizes.append(f"{name} ({map_size(cam, reading.layout)})")
        cam = cams[0] if len(cams) == 1 else fuse(cams)
        full = upsample(cam, tuple(inputs.shape[-2:]), params["upsample"])
        if len(names) == 1:
            return Explanation(full[0, 0], f"layer {sizes[0]}")
        h, w = cam.shape[-2:]
        return Explanation(full[0, 0], f"layers {', '.join(sizes)} fused at {h}x{w} (each tanh-scaled, maximum)")


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(LayerCAM())
