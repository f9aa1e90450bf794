"""Image-space helpers: Gaussian blur, baselines in the model's input space, views of maps."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (N, C, H, W) batch, reflecting at the borders."""
    if sigma <= 0:
        return images.clone()
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    n, c, h, w = images.shape
    x = images.reshape(n * c, 1, h, w)
    # Reflection needs pad < size; clamp the kernel to what the image allows, re-normalized.
    for dim, size in ((3, w), (2, h)):
        r = min(radius, size - 1)
        k = kernel[radius - r: radius + r + 1]
        k = k / k.sum()
        if r == 0:
            continue
        if dim == 3:
            x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
        else:
            x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return x.reshape(n, c, h, w)


BASELINES = ("black", "grey", "blur", "noise")


def pixel_baseline(kind: str, inputs: torch.Tensor, black: torch.Tensor | None = None,
                   generator: torch.Generator | None = None, normalize=None) -> torch.Tensor:
    """A baseline batch like `inputs` (N, C, H, W) in the model's normalized space.

    kind: "black" (the black image, given as `black`, a (C, H, W) normalized tensor,
    else `normalize` of zeros), "grey" (0.5 in every channel before normalization),
    "blur" (the input blurred with sigma = 1/10 of its larger side), or "noise"
    (uniform random pixels). `normalize` maps a (N, C, H, W) tensor in [0, 1] to
    model space; :func:`model_baseline` fills it in from a model's preprocessing.
    """
    if kind == "black" and black is not None:
        return black.to(inputs).expand_as(inputs).clone()
    if kind == "blur":
        return gaussian_blur(inputs, max(inputs.shape[-2:]) / 10)
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}: use {', '.join(BASELINES)}")
    if normalize is None:
        raise ValueError(f"baseline {kind!r} needs the model's normalization (use model_baseline)")
    if kind == "noise":
        uniform = torch.rand(inputs.shape, generator=generator, dtype=inputs.dtype)
        return normalize(uniform).to(inputs)
    level = 0.0 if kind == "black" else 0.5
    return normalize(torch.full(inputs.shape, level, dtype=inputs.dtype)).to(inputs)


def normalizer(mean: Sequence[float], std: Sequence[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    """(N, C, H, W) pixels in [0, 1] -> the model's input space, for a preprocessing's mean and std."""
    mean_ = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_ = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return lambda pixels: (pixels - mean_) / std_


def model_baseline(kind: str, inputs: torch.Tensor, preprocess,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`pixel_baseline` for a model's preprocessing (``ctx.model.preprocess``: its mean and std).

    >>> base = model_baseline("grey", ctx.input(item), ctx.model.preprocess)
    """
    return pixel_baseline(kind, inputs, None, generator, normalizer(preprocess.mean, preprocess.std))


def rgb_view(attribution: torch.Tensor) -> np.ndarray:
    """(3, H, W) signed map -> (H, W, 3) float image in [0, 1], grey at zero: how the
    deconvnet and guided-backprop papers show their reconstructions."""
    a = attribution.detach().float().cpu()
    scale = a.abs().max().clamp_min(1e-12)
    return (a / (2 * scale) + 0.5).clamp(0, 1).permute(1, 2, 0).numpy()


def to_numpy(values: torch.Tensor) -> np.ndarray:
    return values.detach().float().cpu().numpy()
