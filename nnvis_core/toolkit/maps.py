"""A layer's output as channels-first maps, whatever the model's layout, and a layer-sized
map brought to the input's size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnvis_core.contract.conformance import aspect_problem
from nnvis_core.models.outputs import output_layout
from nnvis_core.toolkit.targets import AttributionError


def as_map(model: nn.Module, output: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) for a spatial output (feature maps, tokens, channels-last), a (B, C) vector unchanged.

    What unit-level views (top units, channel objectives, pooled features) need:
    channel c at position (y, x) means the same thing on a convnet and on a ViT
    (whose prefix tokens are dropped). Raises LayoutError for any other shape.
    """
    if output.dim() == 2:
        return output
    return output_layout(model, output, input_hw).to_map(output)


def upsample_to_input(heat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An (h, w) map at the (H, W) input size: bilinear, corners not aligned, as Grad-CAM's default.

    A method that computes at a layer's resolution (a CAM at 8x8 over a 64x64 image) returns
    that map as it is; the attribution base brings it to the input here, so that the heatmap,
    the deletion/insertion curves and the mask share all see one map the size of the image.
    A map of another aspect ratio would be stretched into a picture it never described: it is
    refused with an AttributionError naming both shapes, as the run refuses such a heatmap.
    """
    if tuple(heat.shape[-2:]) == tuple(size):
        return heat
    problem = aspect_problem(tuple(heat.shape[-2:]), tuple(size))
    if problem:
        raise AttributionError(f"the method's {problem}: return an (H, W) or (C, H, W) map over the input, "
                               "or one over a layer of the input's aspect ratio")
    heat = heat if heat.is_floating_point() else heat.float()
    return F.interpolate(heat[None, None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
