"""XGrad-CAM (Fu et al. 2020): channel weights that make the map satisfy sensitivity and conservation.

w_k = sum_ij (A_kij / sum_ab A_kab) * g_kij

the gradient averaged with the channel's own activations as weights (the paper's axiom-based
solution), where Grad-CAM averages it uniformly. A channel whose activations sum to zero gets
weight 0.

>>> from nnvis_plugins.cams import xgradcam
>>> cam, _ = xgradcam.layer_attribute(model, images, target=3, layer="layer4")   # (N, 1, h, w)
"""

from __future__ import annotations

import torch

from nnvis_core import hookimpl
from nnvis_core.toolkit import Target
from nnvis_core.toolkit.cams import CamPlugin, LayerReading, read_layer, weighted_sum


def channel_weights(maps: torch.Tensor, grads: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """(N, C) XGrad-CAM weights. `eps` is added to each channel's sum (0 in the paper; pytorch-grad-cam
    adds 1e-7 and torchcam 1e-8, which their parity tests reproduce)."""
    totals = maps.sum(dim=(2, 3)) + eps
    weighted = (maps * grads).sum(dim=(2, 3))
    return torch.where(totals != 0, weighted / torch.where(totals != 0, totals, 1), 0)


def layer_attribute(model, inputs: torch.Tensor, target: Target, layer="auto",
                    eps: float = 0.0) -> tuple[torch.Tensor, LayerReading]:
    """(N, 1, h, w) unrectified XGrad-CAM at the layer's resolution, and the layer's reading."""
    reading = read_layer(model, inputs, target, layer, method="XGrad-CAM")
    return weighted_sum(channel_weights(reading.maps, reading.gradients, eps), reading.maps), reading


class XGradCAM(CamPlugin):
    name = "xgradcam"
    title = "XGrad-CAM"
    description = (
        "Fu et al. (2020): a weighted sum of a layer's maps whose channel weights average the target's gradient "
        "over the channel's own activations (instead of uniformly, as Grad-CAM does): the weights the paper "
        "derives from two axioms, sensitivity and conservation. Rectified and upsampled to the image."
    )
    label = "XGrad-CAM"

    def layer_cam(self, model, inputs, target, layer, params):
        return layer_attribute(model, inputs, target, layer)


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(XGradCAM())
