"""Style transfer (Gatys, Ecker & Bethge 2016): the content image re-rendered with the style image's
Gram matrices at several layers, keeping its own features at one layer.

Both losses are relative, so their weights mean the same on any model: the
content loss is ||phi(x) - phi(content)||^2 / ||phi(content)||^2 at the content
layer, the style loss the Gram loss at each style layer divided by the mean
square of the style's Gram there. The image starts from the content picture
(Gatys et al. 2016 report that this start gives the same result from run to run).

>>> result = transfer_style(model, normalize, contents, style, "features.8", ["features.1", "features.6"])
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nnvis_core.toolkit import AttributionError, frozen
from nnvis_plugins.synthesis.features import FeatureReader
from nnvis_plugins.synthesis.gram import gram_loss, gram_matrix
from nnvis_plugins.synthesis.optimize import Optimized, optimize, pixel_logits
from nnvis_plugins.synthesis.texture import Normalize

CONTENT_WEIGHT = 1.0
STYLE_WEIGHT = 10.0


def transfer_style(model: nn.Module, normalize: Normalize, contents: torch.Tensor, style: torch.Tensor,
                   content_layer: str, style_layers: Sequence[str], content_weight: float = CONTENT_WEIGHT,
                   style_weight: float = STYLE_WEIGHT, steps: int = 100, optimizer: str = "lbfgs") -> Optimized:
    """Contents (B, 3, H, W) and one style (1, 3, h, w), pixels in [0, 1] -> B stylized images.

    Adam optimizes the batch at once (each image follows its own gradient); L-BFGS, whose line
    search a batch would share, runs image by image. ``curve`` is (evaluations + 1, B).
    """
    layers = list(dict.fromkeys([content_layer, *style_layers]))
    with frozen(model):
        reader = FeatureReader(model, layers)
        with torch.no_grad():
            style_grams = {name: gram_matrix(maps) for name, maps in reader(normalize(style)).items()
                           if name in style_layers}
            content_maps = reader(normalize(contents))[content_layer]
        scales = {name: gram.pow(2).mean().clamp_min(1e-12) for name, gram in style_grams.items()}
        if not content_maps.flatten(1).any(dim=1).all():
            raise AttributionError(f"content layer {content_layer} is zero everywhere on this image: its features "
                                   "keep nothing of it; name another (--set style_transfer.content_layer=NAME)")

        def run(which: slice) -> Optimized:
            target = content_maps[which]

            def losses(pixels: torch.Tensor) -> torch.Tensor:
                maps = reader(normalize(pixels))
                content = (maps[content_layer] - target).pow(2).flatten(1).sum(1) / target.pow(2).flatten(1).sum(1)
                style_loss = sum(gram_loss(gram_matrix(maps[name]), gram) / scales[name]
                                 for name, gram in style_grams.items())
                return content_weight * content.clamp_min(0) + style_weight * style_loss

            return optimize(pixel_logits(contents[which]), losses, steps, optimizer)

        if optimizer == "adam":
            return run(slice(None))
        runs = [run(slice(i, i + 1)) for i in range(contents.shape[0])]
    length = max(len(r.curve) for r in runs)
    curves = [torch.cat([r.curve, r.curve[-1:].expand(length - len(r.curve), -1)]) for r in runs]
    diverged = min((r.diverged for r in runs if r.diverged is not None), default=None)
    return Optimized(torch.cat([r.pixels for r in runs]), torch.cat(curves, dim=1), diverged)
