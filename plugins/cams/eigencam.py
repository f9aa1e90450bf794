"""Eigen-CAM (Muhammad & Yeasin 2020) and Eigen-Grad-CAM: a layer's maps on their first principal direction.

Eigen-CAM:       cam = M v1,  M (hw x C): the layer's activations, one row per position;
                 v1: M's first right singular vector
Eigen-Grad-CAM:  the same for gradient x activation (pytorch-grad-cam's variant)

Eigen-CAM uses neither the target nor a gradient: it shows where the layer's dominant
pattern is, whatever the class. The paper factors the activation matrix as it is; with
`center`, each channel's mean is subtracted first (a PCA, as pytorch-grad-cam computes
it). A singular vector's sign is arbitrary: nnvis turns the map to agree with the
channels' plain sum (for Eigen-Grad-CAM, with HiResCAM's map), so that it never comes out
upside down. On a rectified layer without centring, v1 has one sign throughout
(Perron-Frobenius), and the map is the non-negative pattern itself.

>>> from nnvis_plugins.cams import eigencam
>>> cam, _ = eigencam.layer_attribute(model, images, layer="layer4")   # (N, 1, h, w)
"""

from __future__ import annotations

import torch

from nnvis_core import Param, hookimpl
from nnvis_core.toolkit import FAITHFULNESS_STEPS, TARGET, Target
from nnvis_core.toolkit.cams import LAYER, UPSAMPLE, CamPlugin, LayerReading, read_layer


def first_component(values: torch.Tensor, center: bool = False) -> torch.Tensor:
    """(N, 1, h, w): each image's (C, h, w) values projected on their first right singular vector,
    signed to agree with the sum over channels."""
    n, c, h, w = values.shape
    rows = values.reshape(n, c, h * w).transpose(1, 2).double()  # (N, hw, C)
    rows = torch.nan_to_num(rows)
    if center:
        rows = rows - rows.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(rows, full_matrices=False)
    projection = rows @ vh[:, 0, :, None]  # (N, hw, 1)
    agreement = (projection[..., 0] * values.reshape(n, c, h * w).sum(dim=1).double()).sum(dim=1)
    projection = projection * torch.where(agreement < 0, -1.0, 1.0).to(projection.dtype)[:, None, None]
    return projection[..., 0].reshape(n, 1, h, w).to(values.dtype)


def layer_attribute(model, inputs: torch.Tensor, target: Target = 0, layer="auto", center: bool = False,
                    gradients: bool = False) -> tuple[torch.Tensor, LayerReading]:
    """(N, 1, h, w) unrectified Eigen-CAM (Eigen-Grad-CAM with `gradients`) at the layer's resolution."""
    reading = read_layer(model, inputs, target, layer, gradients=gradients,
                         method="Eigen-Grad-CAM" if gradients else "Eigen-CAM")
    values = reading.gradients * reading.maps if gradients else reading.maps
    return first_component(values, center), reading


CENTER = Param("center", bool, False, "subtract each channel's mean before the SVD (a PCA, as pytorch-grad-cam "
                                      "computes it); the paper factors the activations as they are")


class EigenCAM(CamPlugin):
    name = "eigencam"
    title = "Eigen-CAM"
    description = (
        "Muhammad & Yeasin (2020): a layer's activations projected on their first principal direction (the "
        "first right singular vector of the positions x channels matrix). Uses no gradient and no class: it "
        "shows where the layer's dominant pattern is, the same for every target. Rectified and upsampled."
    )
    label = "Eigen-CAM"
    uses_gradients = False
    params = (TARGET, LAYER, UPSAMPLE, CENTER, FAITHFULNESS_STEPS)

    def layer_cam(self, model, inputs, target, layer, params):
        return layer_attribute(model, inputs, target, layer, center=params["center"])


class EigenGradCAM(CamPlugin):
    name = "eigen_gradcam"
    title = "Eigen-Grad-CAM"
    description = (
        "pytorch-grad-cam's class-specific Eigen-CAM: the first principal direction of gradient x activation "
        "at a layer, signed to agree with their sum (HiResCAM's map). Rectified and upsampled to the image."
    )
    label = "Eigen-Grad-CAM"
    params = (TARGET, LAYER, UPSAMPLE, CENTER, FAITHFULNESS_STEPS)

    def layer_cam(self, model, inputs, target, layer, params):
        return layer_attribute(model, inputs, target, layer, center=params["center"], gradients=True)


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(EigenCAM())
    register(EigenGradCAM())
