"""How an optimized image is represented: the tensors the optimizer changes, and how they become pixels.

A parameterization returns an :class:`ImageParam`: its `params` go to the
optimizer and `image()` builds the (N, 3, H, W) picture in [0, 1] from them.
The choice changes which images gradient steps reach easily (Olah et al. 2017,
"preconditioning"):

- ``pixel_image``: one value per pixel and colour. Steps follow the raw
  gradient, which is dominated by high frequencies: noise that the network
  responds to but people do not see as a pattern.
- ``fourier_image``: the image's 2-D spectrum, each frequency scaled by
  1/frequency**decay_power so that every frequency band moves at the speed it
  has in natural images (whose amplitude falls roughly as 1/f). Steps are then
  in a decorrelated, whitened space and low frequencies are no longer starved.

Both can also decorrelate colour (see :mod:`colour`) and squash with a sigmoid,
so the image always stays in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from nnvis_core.toolkit.featvis.colour import default_basis, mix

Size = int | tuple[int, int]


@dataclass
class ImageParam:
    """Parameters for the optimizer and the function that turns them into images.

    blur(sigma) smooths the underlying image in place with a Gaussian of
    standard deviation `sigma` pixels (used for "blur every k steps").
    """

    params: list[torch.Tensor]
    image: Callable[[], torch.Tensor]
    blur: Callable[[float], None]
    name: str


def _hw(size: Size) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else size
    if height < 2 or width < 2:
        raise ValueError(f"image size must be at least 2x2, got {height}x{width}")
    return height, width


def _noise(shape: tuple[int, ...], sd: float, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """Normal noise drawn on the CPU (same numbers on every device for a seed), then moved."""
    return (torch.randn(shape, generator=generator) * sd).to(device)


def _to_rgb(components: torch.Tensor, basis: np.ndarray | None) -> torch.Tensor:
    return torch.sigmoid(components if basis is None else mix(components, basis))


def pixel_image(batch: int, size: Size, *, device: torch.device | str = "cpu", decorrelate: bool = True,
                sd: float = 0.01, generator: torch.Generator | None = None) -> ImageParam:
    """One free value per pixel and colour component, through a sigmoid into [0, 1].

    decorrelate=False with no transforms or penalties is the plain, unregularized
    optimization of Simonyan et al. (2013) and Erhan et al. (2009), kept for comparison.
    """
    height, width = _hw(size)
    device = torch.device(device)
    values = _noise((batch, 3, height, width), sd, device, generator).requires_grad_(True)
    basis = default_basis() if decorrelate else None

    def blur(sigma: float) -> None:
        with torch.no_grad():
            values.copy_(gaussian_blur(values, sigma))

    return ImageParam([values], lambda: _to_rgb(values, basis), blur,
                      "pixel" + (", decorrelated colour" if decorrelate else ""))


def frequencies(height: int, width: int) -> torch.Tensor:
    """(height, width // 2 + 1) spatial frequency magnitudes, in cycles per pixel, of rfft2's layout."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def fourier_image(batch: int, size: Size, *, device: torch.device | str = "cpu", decay_power: float = 1.0,
                  decorrelate: bool = True, sd: float = 0.01, generator: torch.Generator | None = None) -> ImageParam:
    """The image's spectrum, scaled by 1/frequency**decay_power, through an inverse FFT.

    The scale is normalized to unit mean square over the spectrum, so with
    norm="ortho" the starting image has the same pixel spread `sd` as
    `pixel_image`'s. The lowest frequency is floored at one cycle per image so
    the constant term does not dominate.
    """
    height, width = _hw(size)
    device = torch.device(device)
    freqs = frequencies(height, width)
    scale = 1.0 / freqs.clamp(min=1.0 / max(height, width)) ** decay_power
    scale = (scale / scale.pow(2).mean().sqrt()).to(device)
    spectrum = _noise((batch, 3, height, width // 2 + 1, 2), sd, device, generator).requires_grad_(True)
    basis = default_basis() if decorrelate else None

    def components() -> torch.Tensor:
        return torch.fft.irfft2(torch.view_as_complex(spectrum) * scale, s=(height, width), norm="ortho")

    def blur(sigma: float) -> None:
        # Blurring is a product in frequency space: the Fourier transform of a Gaussian.
        response = torch.exp(-2 * math.pi ** 2 * sigma ** 2 * freqs.pow(2)).to(device)
        with torch.no_grad():
            spectrum.mul_(response[..., None])

    return ImageParam([spectrum], lambda: _to_rgb(components(), basis), blur,
                      f"Fourier (1/f^{decay_power:g})" + (", decorrelated colour" if decorrelate else ""))


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """1-D normalized Gaussian taps out to 3 sigma."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    return taps / taps.sum()


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (N, C, H, W) batch with reflected borders."""
    if sigma <= 0:
        return images
    taps = gaussian_kernel(sigma).to(images)
    radius = taps.numel() // 2
    channels = images.shape[1]
    horizontal = taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = taps.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    mode = "reflect" if min(images.shape[-2:]) > radius else "replicate"
    out = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode=mode), horizontal, groups=channels)
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode=mode), vertical, groups=channels)
