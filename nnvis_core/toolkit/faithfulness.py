"""How faithful a map is: deletion and insertion AUC (Petsiuk et al. 2018, RISE),
and how much of its positive mass falls on the object (with a ground-truth mask).

Deletion: pixels are replaced by a baseline (black) in decreasing order of the
map; the target class probability should fall fast (low AUC is good).
Insertion: pixels of the image are put back into a blurred copy in the same
order; the probability should rise fast (high AUC is good). Each curve has
`steps + 1` points (0 %, 1/steps, ..., 100 % of the pixels); all images of both
curves go through the model without gradients, in chunks sized by memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nnvis_core.toolkit.imaging import gaussian_blur
from nnvis_core.toolkit.scoring import MEMORY_MB, target_probabilities


@dataclass
class Curves:
    fractions: np.ndarray  # (steps + 1,) share of pixels deleted / inserted
    deletion: np.ndarray  # target probability along the deletion path
    insertion: np.ndarray  # target probability along the insertion path

    @property
    def deletion_auc(self) -> float:
        return _trapezoid(self.deletion, self.fractions)

    @property
    def insertion_auc(self) -> float:
        return _trapezoid(self.insertion, self.fractions)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum())


def pixel_order(saliency: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel of an (H, W) map, 0 for the most important; ties keep raster order."""
    flat = saliency.detach().flatten().float()
    order = torch.sort(-flat, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return rank.view_as(saliency)


def deletion_insertion(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int,
    saliency: torch.Tensor,
    deleted: torch.Tensor,
    steps: int = 32,
    batch_size: int | None = None,
    blur_sigma: float | None = None,
    memory_mb: float = MEMORY_MB,
) -> Curves:
    """Deletion and insertion curves for one input (1, C, H, W) and its (H, W) map.

    deleted: the (C, H, W) or (1, C, H, W) value a deleted pixel takes (black in model space).
    blur_sigma: blur of the insertion start image; default 1/32 of the larger side.
    batch_size: images per forward pass; by default as many as `memory_mb` holds.
    """
    x = inputs.detach()[:1]
    h, w = x.shape[-2:]
    rank = pixel_order(saliency.to(x.device))
    counts = np.round(np.linspace(0, h * w, steps + 1)).astype(np.int64)
    masks = torch.stack([rank < int(k) for k in counts])[:, None]  # (steps+1, 1, H, W)
    deleted = deleted.to(x).reshape(1, *x.shape[1:])
    blurred = gaussian_blur(x, blur_sigma if blur_sigma is not None else max(h, w) / 32)
    deletion_images = torch.where(masks, deleted, x)
    insertion_images = torch.where(masks, x, blurred)
    probs = target_probabilities(model, torch.cat([deletion_images, insertion_images]), target,
                                 memory_mb=memory_mb, batch_size=batch_size)
    return Curves(counts / (h * w), probs[: steps + 1], probs[steps + 1:])


def mask_share(saliency: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Share of the map's positive mass inside the object mask, against the mask's share of the image.

    mask_share > mask_area means the map concentrates on the object more than a
    uniform map would; mask_gain is their ratio (1 = no better than uniform).
    """
    positive = np.clip(np.asarray(saliency, dtype=np.float64), 0, None)
    mask = np.asarray(mask, dtype=bool)
    area = float(mask.mean())
    total = positive.sum()
    share = float(positive[mask].sum() / total) if total > 0 else 0.0
    result = {"mask_share": share, "mask_area": area}
    if area > 0:
        result["mask_gain"] = share / area
    return result
