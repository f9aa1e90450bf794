"""Feature inversion (Mahendran & Vedaldi 2015): an image whose features at one layer match the input's,
with a total-variation prior, for several layers at once.

With Adam, image b of one batch is matched at layer b only, so one optimization
reconstructs from every layer (the loss is a sum of independent terms, and Adam
treats each image as if alone). L-BFGS shares one line search over the batch,
which measurably slowed the easy layers (relative error 0.24 instead of 0.02 at
the first ReLU of the demo net after 100 steps), so with L-BFGS each layer gets
its own run. The start is mid-grey with faint noise: from white noise, the units
of a deep ReLU layer that the noise leaves off get no gradient, and the demo net's
last ReLU stayed at a relative error of 0.88 after 300 steps (0.30 from grey after
100). The feature loss is
relative, ||phi(x) - phi0||^2 / ||phi0||^2, so that one prior weight suits every
layer; the prior is the mean squared difference of neighbouring pixels (the
paper's TV with beta = 2), which fills what the features leave undetermined with
smooth colour rather than high-frequency noise.

>>> result = invert_features(model, normalize, pixels, ["features.1", "features.16"], steps=100)
>>> result.errors        # relative feature error per layer at the end
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from nnvis_core.toolkit import frozen
from nnvis_plugins.synthesis.features import FeatureReader
from nnvis_plugins.synthesis.optimize import Optimized, optimize, pixel_logits
from nnvis_plugins.synthesis.texture import Normalize


@dataclass
class Inversion:
    """Reconstructions (L, 3, H, W) in [0, 1], one per layer; the loss curve (evaluations + 1, L); the final
    relative feature error ||phi(x) - phi0|| / ||phi0|| per layer; the pixel correlation with the input."""

    pixels: torch.Tensor
    curve: torch.Tensor
    errors: list[float]
    correlations: list[float]
    diverged: bool = False  # whether a run's loss stopped being finite (its best finite picture is kept)


def total_variation(pixels: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared difference between horizontally and vertically neighbouring pixels."""
    across = (pixels[..., :, 1:] - pixels[..., :, :-1]).pow(2).flatten(1).mean(dim=1)
    down = (pixels[..., 1:, :] - pixels[..., :-1, :]).pow(2).flatten(1).mean(dim=1)
    return across + down


def relative_errors(reader: FeatureReader, normalize: Normalize, pixels: torch.Tensor,
                    targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """(L,) squared relative feature error of image b at layer b, for L images and L layers."""
    maps = reader(normalize(pixels))
    errors = [(maps[name][b] - target).pow(2).sum() / target.pow(2).sum().clamp_min(1e-12)
              for b, (name, target) in enumerate(targets.items())]
    return torch.stack(errors)


def pixel_correlation(first: torch.Tensor, second: torch.Tensor) -> float:
    """Pearson correlation of two pictures' pixel values (all channels together)."""
    a, b = first.flatten().double(), second.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-12))


def grey_start(batch: int, height: int, width: int, seed: int, device: torch.device) -> torch.Tensor:
    """Logits of mid-grey with +-0.01 uniform noise from `seed` (the noise breaks ties between channels)."""
    generator = torch.Generator().manual_seed(seed)
    pixels = 0.5 + 0.02 * (torch.rand(batch, 3, height, width, generator=generator) - 0.5)
    return pixel_logits(pixels).to(device)


def invert_features(model: nn.Module, normalize: Normalize, source: torch.Tensor, layers: Sequence[str],
                    steps: int = 100, optimizer: str = "lbfgs", tv_weight: float = 0.05, seed: int = 0) -> Inversion:
    """Reconstruct the (1, 3, H, W) source in [0, 1] from each layer's features."""
    layers = list(dict.fromkeys(layers))
    height, width = source.shape[-2:]
    with frozen(model):
        reader = FeatureReader(model, layers)
        with torch.no_grad():
            features = reader(normalize(source))
        targets = {name: features[name][0] for name in layers}

        def run(names: list[str]) -> Optimized:
            chosen = {name: targets[name] for name in names}
            sub_reader = FeatureReader(model, names)

            def losses(pixels: torch.Tensor) -> torch.Tensor:
                return relative_errors(sub_reader, normalize, pixels, chosen) + tv_weight * total_variation(pixels)

            return optimize(grey_start(len(names), height, width, seed, source.device), losses, steps, optimizer)

        runs = [run(layers)] if optimizer == "adam" else [run([name]) for name in layers]
        pixels = torch.cat([result.pixels for result in runs])
        curve = torch.cat([_padded(result.curve, max(len(r.curve) for r in runs)) for result in runs], dim=1)
        with torch.no_grad():
            errors = relative_errors(reader, normalize, pixels, targets).sqrt()
    correlations = [pixel_correlation(picture, source[0]) for picture in pixels]
    return Inversion(pixels, curve, errors.tolist(), correlations, any(r.diverged is not None for r in runs))


def _padded(curve: torch.Tensor, length: int) -> torch.Tensor:
    """A loss curve held at its last value up to `length` evaluations (L-BFGS runs differ in length)."""
    return torch.cat([curve, curve[-1:].expand(length - len(curve), -1)]) if len(curve) < length else curve
