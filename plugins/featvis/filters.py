"""The first convolution's weights as pictures: what the network looks for in raw pixels.

First-layer filters of a trained network are usually oriented edges, colour
blobs and gratings (Krizhevsky et al. 2012, Zeiler & Fergus 2013); noisy or
dead filters are a sign of training trouble. Deeper filters have no colour
meaning, so for a conv layer whose input is not RGB each filter is drawn as a
grey mosaic of its per-input-channel kernels.

>>> from nnvis_plugins.featvis.filters import filter_pictures
>>> pictures = filter_pictures(model.features[0].weight)     # (16, 3, 3, 3) uint8
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from nnvis_core import Gallery, Param, Plugin, Scope, hookimpl
from nnvis_core.toolkit import first_conv
from nnvis_plugins.featvis.layers import LayerError

SCALES = ("layer", "filter")


def filter_pictures(weight: torch.Tensor, scale: str = "layer") -> np.ndarray:
    """(out, kh, kw, 3) uint8 pictures of a conv weight (out, 3, kh, kw); grey mosaics for other inputs.

    Zero is mid grey; scale="layer" divides by the largest |weight| of the layer
    (filters compare with each other), "filter" by each filter's own.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be layer or filter, got {scale!r}")
    values = weight.detach().float().cpu().numpy()
    if values.ndim != 4:
        raise ValueError(f"expected a conv weight (out, in, kh, kw), got shape {values.shape}")
    axes = (1, 2, 3)
    limit = np.abs(values).max(axis=axes, keepdims=True) if scale == "filter" else np.abs(values).max()
    scaled = 0.5 + 0.5 * values / np.maximum(limit, 1e-12)
    if values.shape[1] == 3:
        pictures = scaled.transpose(0, 2, 3, 1)
    else:
        pictures = np.stack([mosaic(kernels) for kernels in scaled])
    return (np.clip(pictures, 0, 1) * 255).round().astype(np.uint8)


def mosaic(kernels: np.ndarray) -> np.ndarray:
    """(in, kh, kw) grey kernels on a square grid with one-pixel white gaps -> (H, W, 3)."""
    count, kh, kw = kernels.shape
    side = math.ceil(math.sqrt(count))
    out = np.ones((side * (kh + 1) - 1, side * (kw + 1) - 1))
    for index, kernel in enumerate(kernels):
        row, column = divmod(index, side)
        out[row * (kh + 1):row * (kh + 1) + kh, column * (kw + 1):column * (kw + 1) + kw] = kernel
    return np.repeat(out[..., None], 3, axis=2)


class Filters(Plugin):
    name = "filters"
    title = "Filters"
    description = (
        "The weights of the first convolution (or a named one) as small pictures, zero as mid grey: for the "
        "first layer, the colour and edge patterns the network looks for in raw pixels."
    )
    scope = Scope.MODEL
    params = (
        Param("layer", str, "auto", "a Conv2d layer (see nnvis layers); auto = the first one"),
        Param("scale", str, "layer", "normalize by the layer's largest weight (compare filters) or each filter's own",
              choices=SCALES),
        Param("max_filters", int, 64, "show at most this many filters", minimum=1, maximum=1024),
    )

    def default_layers(self, model) -> list[str]:
        return [first_conv(model)]

    def run_model(self, ctx, params) -> list:
        name = first_conv(ctx.module) if params["layer"] == "auto" else params["layer"]
        layer = ctx.layer(name)
        if not isinstance(layer, nn.Conv2d):
            raise LayerError(f"layer {name!r} is a {type(layer).__name__}, not a Conv2d")
        weight = layer.weight
        pictures = filter_pictures(weight[: params["max_filters"]], params["scale"])
        out, inputs, kh, kw = weight.shape
        shown = f"first {len(pictures)} of {out}" if len(pictures) < out else f"{out}"
        drawn = "RGB" if inputs == 3 else f"grey mosaics of the {inputs} input channels"
        return [Gallery(f"filters of {name}", list(pictures), labels=[str(i) for i in range(len(pictures))],
                        caption=f"{shown} filters, {kh}x{kw}, {drawn}; zero is grey, scaled per {params['scale']}")]


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(Filters())
