"""Colour maps for heatmaps and categorical maps, as 256-entry lookup tables.

Matplotlib is not a dependency; a few anchor colours interpolated linearly are
enough for a perceptually ordered sequential map and a diverging one.
"""

from __future__ import annotations

import numpy as np

# Anchor colours (position, RGB): dark to bright, close to the "inferno" family.
SEQUENTIAL = [
    (0.0, (0, 0, 4)), (0.2, (66, 10, 104)), (0.4, (147, 38, 103)),
    (0.6, (221, 81, 58)), (0.8, (252, 165, 10)), (1.0, (252, 255, 164)),
]
# Blue for negative, white for zero, red for positive.
DIVERGING = [
    (0.0, (5, 48, 97)), (0.25, (67, 147, 195)), (0.5, (247, 247, 247)),
    (0.75, (214, 96, 77)), (1.0, (103, 0, 31)),
]
# Distinct colours for categories (legend order).
CATEGORICAL = [
    "#1f6fb4", "#ff8c1a", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
]


def lookup_table(anchors: list[tuple[float, tuple[int, int, int]]]) -> np.ndarray:
    """A (256, 3) uint8 table interpolating the anchors."""
    positions = np.array([p for p, _ in anchors])
    colours = np.array([c for _, c in anchors], dtype=np.float64)
    x = np.linspace(0, 1, 256)
    table = np.stack([np.interp(x, positions, colours[:, k]) for k in range(3)], axis=1)
    return table.round().astype(np.uint8)


def css_gradient(anchors: list[tuple[float, tuple[int, int, int]]]) -> str:
    """The same map as a CSS linear-gradient, for the colour bar."""
    stops = ", ".join(f"rgb{tuple(c)} {p * 100:.0f}%" for p, c in anchors)
    return f"linear-gradient(to right, {stops})"


def category_colour(index: int) -> tuple[int, int, int]:
    code = CATEGORICAL[index % len(CATEGORICAL)]
    return tuple(int(code[i : i + 2], 16) for i in (1, 3, 5))


SEQUENTIAL_TABLE = lookup_table(SEQUENTIAL)
DIVERGING_TABLE = lookup_table(DIVERGING)
