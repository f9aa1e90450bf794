"""Texture synthesis (Gatys, Ecker & Bethge 2015): an image from noise whose Gram matrices at
several layers match a source image's.

>>> result = synthesize_texture(model, normalize, source, ["features.1", "features.6"], steps=50)
>>> result.pixels.shape, result.curve[0] / result.curve[-1]     # (1, 3, 64, 64), the loss drop
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from nnvis_core.toolkit import frozen
from nnvis_plugins.synthesis.features import FeatureReader
from nnvis_plugins.synthesis.gram import gram_loss, gram_matrix
from nnvis_plugins.synthesis.optimize import Optimized, noise_logits, optimize

Normalize = Callable[[torch.Tensor], torch.Tensor]


def source_grams(reader: FeatureReader, normalize: Normalize, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """{layer: (B, C, C)} Gram matrices of images given as pixels in [0, 1]."""
    with torch.no_grad():
        return {name: gram_matrix(maps) for name, maps in reader(normalize(pixels)).items()}


def style_losses(reader: FeatureReader, normalize: Normalize,
                 targets: dict[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """pixels -> (B,) sum over layers of the Gram loss against `targets` (the layers weigh alike: see gram.py)."""
    def losses(pixels: torch.Tensor) -> torch.Tensor:
        maps = reader(normalize(pixels))
        return sum(gram_loss(gram_matrix(maps[name]), target) for name, target in targets.items())
    return losses


def synthesize_texture(model: nn.Module, normalize: Normalize, source: torch.Tensor, layers: Sequence[str],
                       size: tuple[int, int] | None = None, steps: int = 50, optimizer: str = "lbfgs",
                       seed: int = 0) -> Optimized:
    """Textures (B, 3, h, w) in [0, 1] for the sources (B, 3, H, W) in [0, 1], from seeded noise,
    with the Gram loss before each step and after the last (``curve``, (steps + 1, B))."""
    height, width = size or tuple(source.shape[-2:])
    with frozen(model):
        reader = FeatureReader(model, layers)
        targets = source_grams(reader, normalize, source)
        start = noise_logits(source.shape[0], height, width, seed, source.device)
        return optimize(start, style_losses(reader, normalize, targets), steps, optimizer)


def device_normalizer(mean: Sequence[float], std: Sequence[float], device: torch.device) -> Normalize:
    """Pixels in [0, 1] on `device` -> the model's input space."""
    mean_ = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_ = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return lambda pixels: (pixels - mean_) / std_


def as_picture(pixels: torch.Tensor) -> np.ndarray:
    """(3, H, W) pixels in [0, 1] -> an (H, W, 3) uint8 picture."""
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()

