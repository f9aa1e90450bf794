"""Raw attention maps: what the class token attends to, per layer and head, as a grid of pictures.

For each chosen layer l and head h, the row of the class token in A_l[h] over
the patch tokens (the mean over queries when the model has no class token), on
the patch grid. The main map is the mean of the maps shown; the gallery shows
each one over the image, scaled to its own maximum. Like rollout, it does not
depend on the class.

>>> from nnvis_plugins.transformer import maps
>>> grids = maps.attention_maps(vit, images, layers=[11])     # {11: (N, heads, 14, 14)}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnvis_core import Gallery, Param, hookimpl
from nnvis_core.toolkit import (
    FAITHFULNESS_STEPS,
    TARGET,
    AttributionError,
    Explanation,
)
from nnvis_plugins.transformer.tokens import (
    TransformerMethod,
    forward_attention,
    layout_for,
    patch_maps,
    query_name,
    query_row,
)

NAME = "attention_maps"
HEADS = ("all", "mean")
TILE = 96  # pixels on the longer side of a gallery tile
# Colour stops of the tiles' colour scale, dark (no attention) to bright (the tile's maximum).
_STOPS = np.array([[0.02, 0.02, 0.10], [0.30, 0.10, 0.45], [0.75, 0.20, 0.35], [0.98, 0.55, 0.10], [1.0, 0.95, 0.6]])


def parse_layers(spec: str, count: int | None = None) -> list[int] | str:
    """'all', 'last' or a comma-separated list of layer numbers (0 = first, -1 = last).

    With `count` (the model's attention layers), the layer numbers; without, 'all',
    'last' or the list as given (for checking a parameter before the model is known).
    """
    text = spec.strip().lower()
    if text in ("all", "last"):
        if count is None:
            return text
        return list(range(count)) if text == "all" else [count - 1]
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"layers must be all, last or comma-separated layer numbers, not {spec!r}") from None
    if not numbers:
        raise ValueError("layers names no layer")
    if count is None:
        return numbers
    wrong = [n for n in numbers if not -count <= n < count]
    if wrong:
        raise AttributionError(f"layers={spec}: the model has {count} attention layers (0-{count - 1})")
    return list(dict.fromkeys(n % count for n in numbers))


def _layers_problem(value: str) -> str | None:
    try:
        parse_layers(value)
    except ValueError as error:
        return str(error)
    return None


def attention_maps(model: nn.Module, inputs: torch.Tensor, layers: str | Sequence[int] = "all",
                   heads: str = "all") -> dict[int, torch.Tensor]:
    """{layer: (N, heads, h, w)} patch maps of the class token's attention (one map with heads='mean')."""
    _, weights = forward_attention(model, inputs, NAME)
    layout = layout_for(model, inputs, weights[0].shape[-1], NAME)
    chosen = parse_layers(layers, len(weights)) if isinstance(layers, str) else parse_layers(
        ",".join(map(str, layers)), len(weights))
    result = {}
    for layer in chosen:
        rows = query_row(weights[layer].float(), layout, model)  # (N, heads, T)
        if heads == "mean":
            rows = rows.mean(dim=1, keepdim=True)
        elif heads != "all":
            raise ValueError(f"heads must be all or mean, not {heads!r}")
        result[layer] = patch_maps(rows, layout)
    return result


def colour(values: np.ndarray) -> np.ndarray:
    """(h, w) values in [0, 1] -> (h, w, 3) colours along the tiles' scale."""
    position = np.clip(values, 0, 1) * (len(_STOPS) - 1)
    low = np.minimum(position.astype(int), len(_STOPS) - 2)
    share = (position - low)[..., None]
    return _STOPS[low] * (1 - share) + _STOPS[low + 1] * share


def tile(picture: np.ndarray, heat: torch.Tensor) -> np.ndarray:
    """The (H, W, 3) float picture of one (h, w) map over the image: scaled to its own maximum, coloured,
    laid over a dimmed grey copy of the image, at most TILE pixels on the longer side."""
    height, width = picture.shape[:2]
    scale = TILE / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    small = F.interpolate(torch.from_numpy(picture).permute(2, 0, 1)[None].float(), size=size, mode="area")[0]
    grey = small.mean(dim=0).numpy()[..., None] / 255.0
    heat = heat.detach().float().cpu()  # the maps come from the model's device; the tile is drawn on the CPU
    values = F.interpolate(heat[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    values = values - values.min()
    values = (values / values.max().clamp_min(1e-12)).numpy()
    return np.clip(0.35 * grey + 0.65 * colour(values), 0, 1)


class AttentionMaps(TransformerMethod):
    name = NAME
    title = "Attention maps"
    description = (
        "What the class token attends to in each layer and head of a vision transformer (the mean query "
        "when there is no class token), on the patch grid, as a grid of small maps; the main map is their "
        "mean. Class-agnostic. Needs a vision transformer with global attention."
    )
    label = "attention"
    params = (
        TARGET,
        Param("layers", str, "all", "attention layers to show: all, last, or comma-separated numbers "
              "(0 = first, -1 = last)", check=_layers_problem),
        Param("heads", str, "mean", "one map per head (all) or the mean over heads (mean)", choices=HEADS),
        FAITHFULNESS_STEPS,
    )

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        _, weights = forward_attention(ctx.module, inputs, NAME)
        layout = layout_for(ctx.module, inputs, weights[0].shape[-1], NAME)
        chosen = parse_layers(params["layers"], len(weights))
        maps, tiles, labels = [], [], []
        for layer in chosen:
            rows = query_row(weights[layer].float(), layout, ctx.module)[:1]  # (1, heads, T)
            if params["heads"] == "mean":
                rows = rows.mean(dim=1, keepdim=True)
            grids = patch_maps(rows, layout)[0]  # (heads or 1, h, w)
            maps.append(grids.mean(dim=0))
            for head, grid in enumerate(grids):
                tiles.append(tile(item.pixels, grid))
                labels.append(f"layer {layer}" + ("" if params["heads"] == "mean" else f" head {head}"))
        heat = F.interpolate(torch.stack(maps).mean(dim=0)[None, None], size=tuple(inputs.shape[-2:]),
                             mode="bilinear", align_corners=False)
        shown = ", ".join(map(str, chosen)) if len(chosen) <= 6 else f"{chosen[0]}-{chosen[-1]}"
        heads = "mean over heads" if params["heads"] == "mean" else f"{len(tiles) // len(chosen)} heads each"
        caption = (f"class-agnostic (the same maps for every class); {query_name(layout, ctx.module)} in layer"
                   f"{'s' * (len(chosen) > 1)} {shown} of {len(weights)} ({heads}); {layout.describe()}")
        columns = len(chosen) if params["heads"] == "mean" else len(tiles) // len(chosen)
        gallery = Gallery("attention per layer" + (" and head" if params["heads"] == "all" else ""), tiles,
                          labels=labels, columns=min(columns, 12), caption=caption)
        return Explanation(heat[0, 0], caption + "; main map: their mean", [gallery])


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(AttentionMaps())
