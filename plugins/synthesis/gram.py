"""Gram matrices of feature maps: the texture statistic of Gatys, Ecker & Bethge (2015).

G[c, d] = sum over positions of F[c, p] F[d, p], divided by the number of
positions, so a texture can be matched at another size than its source's; the
loss between two Grams is further divided by C*C, so that layers of different
widths weigh alike (the paper's 1 / (4 N^2 M^2) up to a constant per layer).
"""

from __future__ import annotations

import torch


def gram_matrix(maps: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) maps, or (B, C) vectors -> (B, C, C) channel co-activations averaged over positions."""
    flat = maps.reshape(maps.shape[0], maps.shape[1], -1)
    return flat @ flat.transpose(1, 2) / flat.shape[-1]


def gram_loss(grams: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared difference between two batches of (C, C) Gram matrices."""
    return (grams - targets).pow(2).flatten(1).mean(dim=1)


def gram_distance(first: torch.Tensor, second: torch.Tensor) -> float:
    """Relative Frobenius distance between two Gram matrices: ||G1 - G2|| / ||G2||."""
    return float((first - second).norm() / second.norm().clamp_min(1e-12))
