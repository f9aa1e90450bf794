"""A layer's output as channels-first maps, whatever the model's layout."""

from __future__ import annotations

import torch
from torch import nn

from nnvis_core.models.outputs import output_layout


def as_map(model: nn.Module, output: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) for a spatial output (feature maps, tokens, channels-last), a (B, C) vector unchanged.

    What unit-level views (top units, channel objectives, pooled features) need:
    channel c at position (y, x) means the same thing on a convnet and on a ViT
    (whose prefix tokens are dropped). Raises LayoutError for any other shape.
    """
    if output.dim() == 2:
        return output
    return output_layout(model, output, input_hw).to_map(output)
