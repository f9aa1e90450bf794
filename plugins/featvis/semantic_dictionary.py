"""Semantic dictionaries (Olah et al. 2018, "The Building Blocks of Interpretability").

At each position of a layer's activation grid, the channels that fire most,
each shown as its feature visualization and sized by its activation: the
layer's "vocabulary" at that spot of the image. The visualizations depend
only on the model, the layer and the channel, so they are rendered once and
cached on disk (see cache.py); a folder of images mostly reuses them.

>>> from nnvis_plugins.featvis.semantic_dictionary import top_channels
>>> units, activations = top_channels(model, image_batch, "features.16", top=4)   # (h, w, 4) each
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from nnvis_core import Param, Plugin, Result, Scope, SemanticDictionary, hookimpl
from nnvis_core.toolkit import default_layer, preactivation, readable_advice
from nnvis_core.toolkit.featvis.render import Settings, layer_outputs
from nnvis_plugins.featvis.cache import VisualizationCache, default_cache_dir, model_fingerprint
from nnvis_plugins.featvis.channel_maximization import unit_pictures
from nnvis_plugins.featvis.layers import LayerError
from nnvis_plugins.featvis.options import describe, optimization_params, settings_from

THUMBNAILS = ("neuron", "channel")


def top_channels(model: nn.Module, inputs: torch.Tensor, layer: str, top: int) -> tuple[np.ndarray, np.ndarray]:
    """(units, activations), each (h, w, top): the strongest channels of `layer` at every position
    for a (1, 3, H, W) normalized input, strongest first."""
    output = layer_outputs(model, inputs, [layer])[layer]
    if output.dim() != 4:
        raise LayerError(f"layer {layer!r} outputs shape {tuple(output.shape)}; a dictionary needs (N, C, H, W) "
                         f"maps or tokens on a patch grid nnvis can tell; {readable_advice(model)}")
    values, indices = output[0].topk(min(top, output.shape[1]), dim=0)
    return indices.permute(1, 2, 0).cpu().numpy(), values.permute(1, 2, 0).cpu().numpy().astype(np.float64)


def strongest_first(channels: Sequence[int], units: np.ndarray, activations: np.ndarray) -> list[int]:
    """`channels` ordered by their strongest activation anywhere in the grid, strongest first: what a
    render budget renders first is what the dictionary draws largest."""
    peak: dict[int, float] = {}
    for unit, value in zip(units.reshape(-1).tolist(), activations.reshape(-1).tolist()):
        peak[unit] = max(peak.get(unit, float("-inf")), value)
    return sorted(channels, key=lambda unit: (-peak.get(unit, float("-inf")), unit))


def channel_thumbnails(model: nn.Module, layer: str, channels: Sequence[int], settings: Settings, *,
                       thumbnail: str = "neuron", mean: Sequence[float] = (0.0, 0.0, 0.0),
                       std: Sequence[float] = (1.0, 1.0, 1.0), device: torch.device | str = "cpu",
                       cache: VisualizationCache | None = None, batch: int = 16,
                       limit: int | None = None) -> tuple[dict[int, np.ndarray], int]:
    """({channel: uint8 picture}, how many were rendered rather than read from the cache); with a
    `limit`, at most that many are rendered, the first in `channels` order, and the rest left out.

    The picture of a channel of an activation layer is optimized at the layer's input (see layers.preactivation).
    """
    return unit_pictures(model, preactivation(model, layer), channels, settings, kind=thumbnail, mean=mean,
                         std=std, device=device, cache=cache, batch=batch, limit=limit)


class SemanticDictionaryPlugin(Plugin):
    name = "semantic_dictionary"
    title = "Semantic dictionary"
    description = (
        "Olah et al. 2018: at each position of a layer's grid, the channels that fire most, each drawn as its "
        "feature visualization and sized by its activation. Click a position of the picture to see its "
        "channels. Visualizations are rendered once per model, layer and channel and cached on disk "
        "($NNVIS_CACHE, default ~/.cache/nnvis)."
    )
    scope = Scope.IMAGE
    params = (
        Param("layer", str, "auto", "the layer (see nnvis layers); auto = the rectified output of the last conv"),
        Param("top", int, 4, "channels shown per position", minimum=1, maximum=32),
        Param("thumbnail", str, "neuron",
              "what a channel's picture maximizes: neuron (the channel at the centre position: one receptive "
              "field, as one grid position sees it) or channel (its mean over all positions)", choices=THUMBNAILS),
        Param("cache", bool, True, "keep channel pictures on disk between runs"),
        Param("renders", int, 64,
              "at most this many channel pictures rendered per image, strongest channels first (0: no limit); "
              "the others are drawn as empty boxes until a later image or run renders them. Each render is a "
              "full optimization at the model's input size: on a CPU at 224 px, allow seconds to a minute each",
              minimum=0),
        *optimization_params(),
    )

    def __init__(self) -> None:
        self._memory: dict[tuple, dict[int, np.ndarray]] = {}  # this process's pictures, when cache=false

    def run_image(self, ctx, item, params) -> Result:
        layer = default_layer(ctx.module) if params["layer"] == "auto" else params["layer"]
        ctx.layer(layer)
        units, activations = top_channels(ctx.module, ctx.input(item), layer, params["top"])
        settings = settings_from(ctx, params)
        fingerprint = model_fingerprint(ctx.module)
        cache = VisualizationCache(default_cache_dir(), fingerprint) if params["cache"] else None
        memory = self._memory.setdefault((fingerprint, layer, params["thumbnail"], settings), {})
        needed = sorted(set(units[activations > 0].tolist()))  # only active channels are drawn
        missing = strongest_first([u for u in needed if u not in memory], units, activations)
        preprocess = ctx.model.preprocess
        made, rendered = channel_thumbnails(ctx.module, layer, missing, settings, thumbnail=params["thumbnail"],
                                            mean=preprocess.mean, std=preprocess.std, device=ctx.device,
                                            cache=cache, batch=ctx.batch_size, limit=params["renders"] or None)
        memory.update(made)
        pending = [u for u in needed if u not in memory]
        target = preactivation(ctx.module, layer)
        where = layer if target == layer else f"{layer} (pictures optimized at {target})"
        h, w = units.shape[:2]
        caption = (f"{where}, {h}x{w} positions, top {units.shape[2]}; {len(needed)} channel pictures, "
                   f"{rendered} rendered now, {len(needed) - rendered - len(pending)} reused"
                   + (f", {len(pending)} left for later (renders={params['renders']} per image)" if pending else "")
                   + f"; {params['thumbnail']} objective, {describe(settings)}")
        artifact = SemanticDictionary("semantic dictionary", item.pixels, units, activations,
                                      {u: memory[u] for u in needed if u in memory}, caption=caption,
                                      pending=pending)
        # How many pictures were rendered now is bookkeeping (it depends on the cache), so it
        # stays in the caption; metrics must not change between runs with the same seed.
        return Result([artifact], {"channels_shown": float(len(needed))})


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(SemanticDictionaryPlugin())
