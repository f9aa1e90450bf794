"""Colour decorrelation: optimize in a basis where natural colours are uncorrelated.

The three colour channels of natural images are strongly correlated (a bright
pixel is bright in R, G and B). Gradient steps taken independently per RGB
channel therefore make saturated, unnatural colour noise. Optimizing three
uncorrelated components instead, and mixing them into RGB with a matrix whose
columns are the principal axes of natural colour scaled by their spread, makes
each step look like a plausible colour change (Olah et al. 2017, "Feature
Visualization", preconditioning).

The default basis models natural images as channels of equal spread with a
correlation of 0.9 between every pair (Ruderman, Cronin & Chiao 1998 find the
principal axes of natural colour to be a luminance axis and two opponent
axes; this covariance has exactly those axes). `basis_from_images` computes
the basis of a particular set of images instead.
"""

from __future__ import annotations

import numpy as np
import torch

NATURAL_CORRELATION = 0.9  # between any two colour channels of natural images


def normalized(basis: np.ndarray) -> np.ndarray:
    """The basis scaled so its largest column has unit length (steps keep the same size overall)."""
    return basis / np.linalg.norm(basis, axis=0).max()


def default_basis(correlation: float = NATURAL_CORRELATION) -> np.ndarray:
    """(3, 3) matrix M with rgb = M @ components, for natural images."""
    covariance = (1 - correlation) * np.eye(3) + correlation * np.ones((3, 3))
    return square_root(covariance)


def basis_from_images(pixels: np.ndarray) -> np.ndarray:
    """(3, 3) mixing matrix for a set of images: the square root of their colour covariance.

    `pixels` is any array whose last axis is RGB (uint8 or float in [0, 1]). The
    columns are the principal axes scaled by their standard deviations, so that
    uncorrelated, equal-variance components mixed by it have the images' colour
    covariance (up to the overall scale that `normalized` removes).
    """
    values = np.asarray(pixels, dtype=np.float64).reshape(-1, 3)
    if values.max() > 1.0:
        values = values / 255.0
    return square_root(np.cov(values, rowvar=False))


def square_root(covariance: np.ndarray) -> np.ndarray:
    """Principal axes of a colour covariance scaled by their spreads, largest first, normalized."""
    spreads, axes = np.linalg.eigh(covariance)
    order = np.argsort(spreads)[::-1]
    return normalized(axes[:, order] * np.sqrt(np.clip(spreads[order], 1e-12, None)))


def mix(components: torch.Tensor, basis: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) decorrelated components -> (N, 3, H, W) RGB, before the squashing sigmoid."""
    matrix = torch.as_tensor(basis, dtype=components.dtype, device=components.device)
    return torch.einsum("ij,njhw->nihw", matrix, components)
