"""HiResCAM (Draelos & Carin 2020) and element-wise Grad-CAM: the gradient multiplied in position by position.

HiResCAM:               cam_ij = sum_k g_kij * A_kij
element-wise Grad-CAM:  cam_ij = sum_k ReLU(g_kij * A_kij)

HiResCAM keeps every position's own gradient, where Grad-CAM averages it over the map
first; for a model whose head is a global average pool and one linear layer, its map
(before the ReLU) sums exactly to the target score less the bias. Element-wise
Grad-CAM (pytorch-grad-cam's variant) rectifies each product before the sum.

>>> from nnvis_plugins.cams import hirescam
>>> cam, _ = hirescam.layer_attribute(model, images, target=3, layer="layer4")   # (N, 1, h, w)
"""

from __future__ import annotations

import torch

from nnvis_core import hookimpl
from nnvis_core.toolkit import AttributionError, Target
from nnvis_core.toolkit.cams import CamPlugin, LayerReading, read_layer


def layer_attribute(model, inputs: torch.Tensor, target: Target, layer="auto",
                    elementwise_relu: bool = False) -> tuple[torch.Tensor, LayerReading]:
    """(N, 1, h, w) unrectified HiResCAM (element-wise Grad-CAM with `elementwise_relu`), and the reading."""
    reading = read_layer(model, inputs, target, layer, method="HiResCAM")
    products = reading.gradients * reading.maps
    if elementwise_relu:
        return products.relu().sum(dim=1, keepdim=True), reading
    cam = products.sum(dim=1, keepdim=True)
    check_cancellation(cam, products, layer if isinstance(layer, str) else type(layer).__name__)
    return cam, reading


def check_cancellation(cam: torch.Tensor, products: torch.Tensor, layer: str) -> None:
    """Refuse a map that is rounding noise: where a layer feeds a per-position normalization (a Swin stage
    before its LayerNorm), scaling a position's features changes nothing downstream, so its gradient is
    orthogonal to them and every position sums to zero (Euler's theorem): what remains is float error."""
    scale = products.abs().sum(dim=1).amax()
    if scale > 0 and cam.abs().amax() <= CANCELLED * scale:
        raise AttributionError(
            f"HiResCAM: at layer {layer} each position's gradient x activation sums to zero up to rounding "
            f"(|map| <= {CANCELLED:g} of its terms): the layer feeds a normalization of each position, which "
            "no scaling of it changes; read the layer after that norm (e.g. the model's final norm)")


CANCELLED = 1e-4  # float32 sums of a few thousand terms cancel to about 1e-6 of their size, a real map never so


class HiResCAM(CamPlugin):
    name = "hirescam"
    title = "HiResCAM"
    description = (
        "Draelos & Carin (2020): each position of a layer's maps multiplied by the target's gradient at that "
        "same position, summed over channels (Grad-CAM averages the gradient over positions first). On a model "
        "that ends in global average pooling and one linear layer it shows exactly the locations the score "
        "came from. Rectified and upsampled to the image."
    )
    label = "HiResCAM"

    def layer_cam(self, model, inputs, target, layer, params):
        return layer_attribute(model, inputs, target, layer)


class GradCAMElementWise(CamPlugin):
    name = "gradcam_elementwise"
    title = "Element-wise Grad-CAM"
    description = (
        "pytorch-grad-cam's variant of HiResCAM: each position's activation times its gradient is rectified "
        "before the sum over channels, so a channel that argues against the class at a position cannot cancel "
        "one that argues for it. Upsampled to the image."
    )
    label = "element-wise Grad-CAM"

    def layer_cam(self, model, inputs, target, layer, params):
        return layer_attribute(model, inputs, target, layer, elementwise_relu=True)


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(HiResCAM())
    register(GradCAMElementWise())
