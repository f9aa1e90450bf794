"""Grad-CAM++ (Chattopadhay et al. 2018): channel weights from positive gradients, each position weighted.

w_k = sum_ij alpha_kij * ReLU(g_kij),  alpha_kij = g_kij^2 / (2 g_kij^2 + sum_ab A_kab * g_kij^3)

with g the gradient of the target score at the layer (the paper's closed form, eq. 19,
for a score passed through an exponential). The exponential's factor exp(S) on every
weight is a positive constant per image: it changes no map's shape, and nnvis drops it
as pytorch-grad-cam and torchcam do. alpha is 0 where g is 0 (its 0/0).

>>> from nnvis_plugins.cams import gradcam_plusplus
>>> cam, _ = gradcam_plusplus.layer_attribute(model, images, target=3, layer="layer4")   # (N, 1, h, w)
"""

from __future__ import annotations

import torch

from nnvis_core import hookimpl
from nnvis_core.toolkit import Target
from nnvis_core.toolkit.cams import CamPlugin, LayerReading, read_layer, weighted_sum


def channel_weights(maps: torch.Tensor, grads: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """(N, C) Grad-CAM++ weights. `eps` is added to alpha's denominator (0 in the paper; pytorch-grad-cam
    adds 1e-6, which its parity test reproduces)."""
    squared = grads.pow(2)
    totals = maps.sum(dim=(2, 3), keepdim=True)
    denominator = 2 * squared + totals * squared * grads + eps
    alpha = torch.where(grads != 0, squared / torch.where(grads != 0, denominator, 1), 0)
    return (alpha * grads.relu()).sum(dim=(2, 3))


def layer_attribute(model, inputs: torch.Tensor, target: Target, layer="auto",
                    eps: float = 0.0) -> tuple[torch.Tensor, LayerReading]:
    """(N, 1, h, w) unrectified Grad-CAM++ at the layer's resolution, and the layer's reading."""
    reading = read_layer(model, inputs, target, layer, method="Grad-CAM++")
    return weighted_sum(channel_weights(reading.maps, reading.gradients, eps), reading.maps), reading


class GradCAMPlusPlus(CamPlugin):
    name = "gradcam_plusplus"
    title = "Grad-CAM++"
    description = (
        "Chattopadhay et al. (2018): like Grad-CAM, a weighted sum of a layer's maps, but each channel's weight "
        "sums its positive gradients with per-position coefficients (the paper's closed form), so that several "
        "instances of a class, or a large object, each count. Rectified and upsampled to the image."
    )
    label = "Grad-CAM++"

    def layer_cam(self, model, inputs, target, layer, params):
        return layer_attribute(model, inputs, target, layer)


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(GradCAMPlusPlus())
