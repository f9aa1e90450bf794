"""RISE as an nnvis plugin: a black-box saliency map from randomly masked copies of the image.

Petsiuk, Das & Saenko (2018), "RISE: Randomized Input Sampling for Explanation
of Black-box Models". The model is only run forward: N random masks keep or
dim parts of the image, each masked copy is scored, and every pixel gets the
average score of the copies that kept it:

    saliency = sum_i score_i * mask_i / (N * p)

where p is the chance that a cell of a mask is kept (the mean of a mask), so a
pixel whose presence does not matter gets the mean score and one the class
depends on gets more. The masks are "smooth": a binary s x s grid, upsampled
bilinearly to (s + 1) cells and cropped with a random shift, so that the
kept regions have soft edges at no fixed place.

    >>> from nnvis_rise import rise
    >>> saliency = rise(model, image, target=3, masks=2000)    # image (1, C, H, W) -> (H, W)

Built only on the public toolkit (nnvis_core.toolkit); docs/plugins.md walks through it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nnvis_core import Param, hookimpl
from nnvis_core.toolkit import (
    BASELINES,
    FAITHFULNESS_STEPS,
    MEMORY_MB,
    TARGET,
    AttributionError,
    AttributionPlugin,
    Explanation,
    Target,
    bytes_per_image,
    chunk_size,
    model_baseline,
    target_probabilities,
)

__all__ = ["Rise", "draw_grids", "rise", "smooth_masks"]


def draw_grids(count: int, grid: int, probability: float, size: tuple[int, int],
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every random number of `count` masks, drawn at once: (count, grid, grid) binary grids
    (1 = keep, with chance `probability`) and (count, 2) crop offsets below one cell of `size`.

    Drawing them all up front makes the masks independent of how they are later batched.
    """
    cell_h, cell_w = math.ceil(size[0] / grid), math.ceil(size[1] / grid)
    grids = (torch.rand(count, grid, grid, generator=generator) < probability).float()
    offsets = torch.stack([torch.randint(0, cell_h, (count,), generator=generator),
                           torch.randint(0, cell_w, (count,), generator=generator)], dim=1)
    return grids, offsets


def smooth_masks(grids: torch.Tensor, offsets: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(n, H, W) masks in [0, 1]: each grid upsampled bilinearly to (grid + 1) cells a side and
    cropped to `size` at its offset (the paper's smooth masks)."""
    grid = grids.shape[-1]
    height, width = size
    cell_h, cell_w = math.ceil(height / grid), math.ceil(width / grid)
    upsampled = F.interpolate(grids[:, None], size=((grid + 1) * cell_h, (grid + 1) * cell_w),
                              mode="bilinear", align_corners=False)[:, 0]
    return torch.stack([upsampled[i, top:top + height, left:left + width]
                        for i, (top, left) in enumerate(offsets.tolist())])


def rise(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target,
    masks: int = 1000,
    grid: int = 7,
    probability: float = 0.5,
    baseline: torch.Tensor | None = None,
    memory_mb: float = MEMORY_MB,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The (H, W) RISE saliency of class `target` for one image `inputs` (1, C, H, W).

    masks: how many random masks (N); more gives a smoother, less noisy map.
    grid: cells per side of a mask (s); the map cannot resolve much finer than H / s.
    probability: chance that a cell is kept (p).
    baseline: what a dimmed pixel becomes, in the model's input space, shaped like
    `inputs` (see nnvis_core.toolkit.model_baseline); None keeps the paper's
    image * mask (zero in the model's input space).
    memory_mb: the budget of one chunk: its masks, masked images and forward pass.
    generator: where the masks' random numbers come from, for reproducible maps.
    """
    if inputs.dim() != 4 or inputs.shape[0] != 1:
        raise AttributionError(f"rise explains one image: inputs must be (1, C, H, W), not {tuple(inputs.shape)}")
    if masks < 1 or grid < 1 or not 0 < probability <= 1:
        raise AttributionError("rise needs masks >= 1, grid >= 1 and 0 < probability <= 1")
    image = inputs.detach()
    size = (image.shape[-2], image.shape[-1])
    base = torch.zeros_like(image) if baseline is None else baseline.detach().to(image).expand_as(image)
    grids, offsets = draw_grids(masks, grid, probability, size, generator)
    grids = grids.to(image.device)

    # One chunk holds a forward pass, the masks and the masked images within the budget.
    per_mask = bytes_per_image(model, image) + image.element_size() * (image.numel() + size[0] * size[1])
    step = chunk_size(per_mask, memory_mb, limit=masks)
    saliency = torch.zeros(size, dtype=image.dtype, device=image.device)
    for start in range(0, masks, step):
        chunk = smooth_masks(grids[start:start + step], offsets[start:start + step], size)
        masked = base + chunk[:, None] * (image - base)  # (n, C, H, W): the image kept where the mask is 1
        scores = target_probabilities(model, masked, target, batch_size=len(chunk))  # one forward pass, no grad
        saliency += torch.einsum("n,nhw->hw", torch.from_numpy(scores).to(chunk), chunk)
    return saliency / (masks * probability)


def _probability(value: float) -> str | None:
    return None if 0 < value <= 1 else "the chance that a cell is kept must be above 0 and at most 1"


class Rise(AttributionPlugin):
    name = "rise"
    title = "RISE"
    description = (
        "RISE (Petsiuk et al. 2018): the image is scored under many random smooth masks, and each pixel "
        "gets the mean target probability of the masked copies that kept it. Needs only forward passes."
    )
    label = "expected probability when kept"
    params = (
        TARGET,
        Param("masks", int, 1000, "number of random masks (N); more masks, less noise", minimum=1, maximum=100_000),
        Param("grid", int, 7, "cells per side of a mask (s)", minimum=1, maximum=64),
        Param("probability", float, 0.5, "chance that a cell is kept (p)", check=_probability),
        Param("baseline", str, "black", "what a masked-out pixel becomes: black, grey, blur or noise",
              choices=BASELINES),
        Param("memory_mb", int, MEMORY_MB, "memory one chunk of masked images may use, in MiB", minimum=1),
        FAITHFULNESS_STEPS,
    )

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        # Seeded per image and plugin, never by the order of work: the same run gives the same map.
        generator = torch.Generator().manual_seed(ctx.seed_for(item, self.name))
        baseline = model_baseline(params["baseline"], inputs, ctx.model.preprocess, generator)
        saliency = rise(ctx.module, inputs, target, params["masks"], params["grid"], params["probability"],
                        baseline, params["memory_mb"], generator)
        caption = (f"{params['masks']} masks, {params['grid']}x{params['grid']} grid, "
                   f"p = {params['probability']:g}, {params['baseline']} baseline")
        return Explanation(saliency, caption)


@hookimpl
def nnvis_register_plugins(register):
    register(Rise())
