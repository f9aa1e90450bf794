"""Image-space helpers: Gaussian blur, baselines in the model's input space, RGB views of maps."""

from __future__ import annotations

import math

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


def pixel_baseline(kind: str, inputs: torch.Tensor, black: torch.Tensor, generator: torch.Generator | None = None,
                   normalize=None) -> torch.Tensor:
    """A baseline batch like `inputs` (N, C, H, W) in the model's normalized space.

    kind: "black" (the black image, given as `black`, a (C, H, W) normalized tensor),
    "blur" (the input blurred with sigma = 1/10 of its larger side), or "noise"
    (uniform random pixels; `normalize` maps a (N, C, H, W) tensor in [0, 1] to model space).
    """
    if kind == "black":
        return black.to(inputs).expand_as(inputs).clone()
    if kind == "blur":
        return gaussian_blur(inputs, max(inputs.shape[-2:]) / 10)
    if kind == "noise":
        uniform = torch.rand(inputs.shape, generator=generator, dtype=inputs.dtype)
        return normalize(uniform).to(inputs)
    raise ValueError(f"unknown baseline {kind!r}: use black, blur or noise")


def rgb_view(attribution: torch.Tensor) -> np.ndarray:
    """(3, H, W) signed map -> (H, W, 3) float image in [0, 1], grey at zero: how the
    deconvnet and guided-backprop papers show their reconstructions."""
    a = attribution.detach().float().cpu()
    scale = a.abs().max().clamp_min(1e-12)
    return (a / (2 * scale) + 0.5).clamp(0, 1).permute(1, 2, 0).numpy()


def to_numpy(values: torch.Tensor) -> np.ndarray:
    return values.detach().float().cpu().numpy()
