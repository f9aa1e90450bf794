"""A layer's feature maps for one image, and how sparse every rectified layer is on it.

Each channel's map is drawn in grey on one shared scale (the layer's largest
activation on this image), so strong and silent channels can be compared. The
sparsity of a layer is the share of its activations that are exactly zero
after the ReLU: ReLU networks typically switch most units off for any given
image, more so in deeper layers (Glorot et al. 2011; Yosinski et al. 2015).

>>> from nnvis_plugins.featvis.activations import layer_sparsity
>>> layer_sparsity(model, batch)      # {"features.1": 0.41, ...}
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

from nnvis_core import Gallery, Param, Plugin, Result, Scope, Text, hookimpl
from nnvis_core.toolkit import Layout, frozen, middle_block, patch_size
from nnvis_core.toolkit.featvis.render import Recorder
from nnvis_plugins.featvis.layers import LayerError, middle_rectified_layer, rectifier_layers, spread


@contextmanager
def counting_zeros(model: nn.Module, names: list[str]) -> Iterator[dict[str, list[int]]]:
    """{layer: [zeros, total]} accumulated over every call of each named layer inside the block
    (a ReLU module that a block calls twice counts both calls)."""
    counts = {name: [0, 0] for name in names}
    handles = []
    for name in names:
        def hook(module, args, output, name=name):
            counts[name][0] += int((output == 0).sum())
            counts[name][1] += output.numel()
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        yield counts
    finally:
        for handle in handles:
            handle.remove()


def layer_sparsity(model: nn.Module, inputs: torch.Tensor) -> dict[str, float]:
    """Share of exact zeros in the output of every ReLU module, for a normalized batch."""
    names = rectifier_layers(model)
    with torch.no_grad(), frozen(model), counting_zeros(model, names) as counts:
        model(inputs)
    return _shares(counts)


def layer_maps_and_sparsity(model: nn.Module, inputs: torch.Tensor,
                            layer: str) -> tuple[torch.Tensor, Layout, dict[str, float]]:
    """The output of `layer` as (N, C, h, w) maps, the layout it was read from, and
    layer_sparsity(model, inputs), from one forward pass."""
    names = rectifier_layers(model)
    with torch.no_grad(), frozen(model), counting_zeros(model, names) as counts, \
            Recorder(model, [layer]) as recorder:
        outputs, _ = recorder.run(model, inputs)
    if layer not in recorder.layouts:
        raise LayerError(f"layer {layer!r} outputs shape {tuple(outputs[layer].shape)}: no feature maps or tokens")
    return outputs[layer], recorder.layouts[layer], _shares(counts)


def _shares(counts: dict[str, list[int]]) -> dict[str, float]:
    return {name: zeros / total for name, (zeros, total) in counts.items() if total}


def feature_maps(values: torch.Tensor, channels: list[int]) -> list[np.ndarray]:
    """(C, h, w) activations -> grey (h, w, 3) uint8 pictures of the chosen channels, on one shared scale."""
    chosen = values[channels].float()
    low = float(min(0.0, chosen.min()))
    high = float(chosen.max())
    scaled = (chosen - low) / (high - low if high > low else 1.0)
    grey = (scaled.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return [np.repeat(g[..., None], 3, axis=2) for g in grey]


def default_activations_layer(model: nn.Module) -> str:
    """The middle of the network: the rectified output of the middle conv, or the middle block of a
    model with a patch embedding (ViT, Swin, ConvNeXt), whose middle conv would be its stem."""
    return middle_block(model) if patch_size(model) is not None else middle_rectified_layer(model)


class Activations(Plugin):
    name = "activations"
    title = "Activations"
    description = (
        "A layer's feature maps for the image, one grey tile per channel on a shared scale (white = the "
        "layer's strongest activation here), and the sparsity of every ReLU layer: the share of its "
        "activations that are exactly zero on this image."
    )
    scope = Scope.IMAGE
    params = (
        Param("layer", str, "auto", "the layer (see nnvis layers); auto = the rectified output of the middle conv, "
              "or the middle block of a transformer or ConvNeXt (tokens and channels-last maps are shown as maps)"),
        Param("max_maps", int, 64, "show at most this many channels, spread over the layer", minimum=1,
              maximum=2048),
    )

    def default_layers(self, model) -> list[str]:
        return [default_activations_layer(model)]

    def run_image(self, ctx, item, params) -> Result:
        layer = default_activations_layer(ctx.module) if params["layer"] == "auto" else params["layer"]
        ctx.layer(layer)
        inputs = ctx.input(item)
        output, layout, sparsity = layer_maps_and_sparsity(ctx.module, inputs, layer)
        output = output[0]
        channels = spread(params["max_maps"], output.shape[0])
        maps = feature_maps(output, channels)
        own = float((output == 0).float().mean())
        metrics = {f"sparsity:{name}": share for name, share in sparsity.items()}
        metrics["sparsity"] = own
        c, h, w = output.shape
        shown = f"{len(channels)} of {c} channels" if len(channels) < c else f"all {c} channels"
        artifacts = [
            Gallery(f"feature maps of {layer}", maps, labels=[str(i) for i in channels],
                    caption=f"{shown}, {h}x{w}{'' if layout.kind == 'map' else ' (' + layout.describe() + ')'}; "
                            f"white = {float(output.max()):.3g}; "
                            f"{own:.1%} of this layer's activations are zero (metric sparsity); "
                            "sparsity:LAYER is the share of exact zeros in each ReLU's output"),
        ]
        if not sparsity:
            artifacts.append(Text("sparsity per ReLU layer", "the model has no ReLU modules (it may call "
                                  "relu as a function), so only the chosen layer's share of zeros is given"))
        return Result(artifacts, metrics)


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(Activations())
