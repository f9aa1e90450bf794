"""Where the occluder goes, what it is filled with, and how per-position results become maps.

Windows are placed as Captum's `Occlusion` places them, so that the two agree
exactly: along each side the window starts at 0, stride, 2*stride, ... for
ceil((size - window) / stride) + 1 positions, and the last one is cut off at
the image border when the stride does not divide (size - window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from nnvis_core.toolkit import gaussian_blur

OCCLUDERS = ("grey", "mean", "blur", "zero")
MIN_POSITIONS = 16  # per side, for the default stride


class OcclusionError(ValueError):
    """Occlusion cannot run with these arguments (one-line message)."""


def default_window(height: int, width: int) -> int:
    """1/7 of the shorter side (a 32-pixel square at 224), at least 1."""
    return max(1, round(min(height, width) / 7))


def default_stride(height: int, width: int, window: int) -> int:
    """The largest stride that still gives at least 16 positions along the shorter side.

    ceil(d / s) + 1 >= 16 positions (d = side - window) holds while s < d / 14.
    """
    travel = min(height, width) - window
    return max(1, min(window, math.ceil(travel / (MIN_POSITIONS - 2)) - 1))


def _starts(size: int, window: int, stride: int) -> np.ndarray:
    count = math.ceil((size - window) / stride) + 1
    return np.arange(count) * stride


@dataclass(frozen=True)
class Windows:
    """The occluder positions over an (height, width) image: a grid of rows x cols squares."""

    height: int
    width: int
    window: int
    stride: int

    def __post_init__(self) -> None:
        if self.window < 1 or self.window > min(self.height, self.width):
            raise OcclusionError(f"occlusion window {self.window} must be from 1 to the image side "
                                 f"{min(self.height, self.width)}")
        if self.stride < 1 or self.stride > self.window:
            raise OcclusionError(f"occlusion stride {self.stride} must be from 1 to the window {self.window}")

    @property
    def row_starts(self) -> np.ndarray:
        return _starts(self.height, self.window, self.stride)

    @property
    def col_starts(self) -> np.ndarray:
        return _starts(self.width, self.window, self.stride)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.row_starts), len(self.col_starts)

    @property
    def count(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def corners(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(P,) top and left pixel of every window, row-major over the grid."""
        rows, cols = np.meshgrid(self.row_starts, self.col_starts, indexing="ij")
        return torch.from_numpy(rows.ravel()).long(), torch.from_numpy(cols.ravel()).long()

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Centre row of each grid row and centre column of each grid column (cut windows included)."""
        def centre(starts: np.ndarray, size: int) -> np.ndarray:
            return (starts + np.minimum(starts + self.window, size) - 1) / 2

        return centre(self.row_starts, self.height), centre(self.col_starts, self.width)

    def to_pixels(self, grid: np.ndarray) -> np.ndarray:
        """An (rows, cols) grid of per-position values as an (H, W) map: each pixel takes the
        value of the position whose window centre is nearest, so a value sits where the
        occluder was centred (the convention of Zeiler & Fergus's figure 7)."""
        grid = np.asarray(grid)
        if grid.shape != self.shape:
            raise OcclusionError(f"grid of shape {grid.shape} for {self.shape} occluder positions")
        row_centres, col_centres = self.centres()
        rows = _nearest(row_centres, self.height)
        cols = _nearest(col_centres, self.width)
        return grid[rows][:, cols]

    def coverage(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, H) and (cols, W) 0/1 matrices: which pixel rows / columns each window covers."""
        def cover(starts: np.ndarray, size: int) -> np.ndarray:
            pixel = np.arange(size)
            return ((pixel >= starts[:, None]) & (pixel < starts[:, None] + self.window)).astype(np.float64)

        return cover(self.row_starts, self.height), cover(self.col_starts, self.width)

    def spread(self, grid: np.ndarray) -> np.ndarray:
        """Per-pixel mean of a per-position value over the windows that cover the pixel:
        how Captum's Occlusion turns output differences into an attribution map."""
        row_cover, col_cover = self.coverage()
        total = row_cover.T @ np.asarray(grid, dtype=np.float64) @ col_cover
        count = np.outer(row_cover.sum(0), col_cover.sum(0))
        return total / count


def _nearest(centres: np.ndarray, size: int) -> np.ndarray:
    """For each pixel 0..size-1, the index of the nearest centre (the earlier one on a tie)."""
    pixel = np.arange(size)
    midpoints = (centres[1:] + centres[:-1]) / 2
    return np.searchsorted(midpoints, pixel, side="left")


def fill_values(occluder: str | float | torch.Tensor, image: torch.Tensor, window: int) -> torch.Tensor:
    """The (1, C, H, W) values an occluded pixel takes, in the model's input space.

    occluder: "zero" (0 in model space, Captum's default baseline; the dataset mean colour
    under the usual normalization), "mean" (the image's own mean colour), "blur" (the image
    blurred with sigma = window / 4, so the square hides detail but keeps colour), or a
    number or tensor broadcastable to (1, C, H, W) such as :func:`grey`.
    """
    x = image.detach()
    if isinstance(occluder, (int, float, torch.Tensor)) and not isinstance(occluder, bool):
        value = torch.as_tensor(occluder, dtype=x.dtype, device=x.device)
        try:
            return value.expand_as(x).clone()
        except RuntimeError:
            raise OcclusionError(f"occluder of shape {tuple(value.shape)} does not broadcast to the input "
                                 f"{tuple(x.shape)}") from None
    if occluder == "zero":
        return torch.zeros_like(x)
    if occluder == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if occluder == "blur":
        return gaussian_blur(x, window / 4)
    if occluder == "grey":
        raise OcclusionError("occluder 'grey' needs the model's normalization: pass occlusion.grey(mean, std)")
    raise OcclusionError(f"unknown occluder {occluder!r}: use {', '.join(OCCLUDERS)}, a number or a tensor")


def grey(mean, std) -> torch.Tensor:
    """(1, C, 1, 1) mid-grey (0.5 in every channel before normalization) in model space:
    the occluder of Zeiler & Fergus."""
    mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (0.5 - mean) / std
