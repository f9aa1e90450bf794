"""An image parameterization and the optimizer loop every synthesis plugin shares.

The image is ``sigmoid(logits)``: pixels stay in [0, 1] without clipping, which
would stall L-BFGS's line search. L-BFGS is what Gatys et al. used and converges
in far fewer steps on these smooth losses; Adam is there for large models where
L-BFGS's extra evaluations per step cost too much. Losses are per image, and the
optimizer minimizes their sum: with Adam every image of a batch follows its own
gradient exactly as if alone (batching is free); L-BFGS's line search is shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

OPTIMIZERS = ("lbfgs", "adam")
ADAM_LR = 0.05


@dataclass
class Optimized:
    """The final pixels (B, 3, H, W) in [0, 1] and ``curve`` (evaluations + 1, B): the per-image loss at
    every evaluation of the loss (one forward and backward pass: an Adam step, or one of the one or more
    evaluations of an L-BFGS iteration), then at the final pixels."""

    pixels: torch.Tensor
    curve: torch.Tensor


def noise_logits(batch: int, height: int, width: int, seed: int, device: torch.device) -> torch.Tensor:
    """Logits of uniform white noise in [0, 1] (Gatys et al.'s start), drawn from `seed` alone (reproducible)."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(batch, 3, height, width, generator=generator)
    return pixel_logits(pixels).to(device)


def pixel_logits(pixels: torch.Tensor) -> torch.Tensor:
    """The logits whose sigmoid is `pixels` (kept off 0 and 1)."""
    return torch.logit(pixels.clamp(1e-3, 1 - 1e-3))


def optimize(logits: torch.Tensor, losses: Callable[[torch.Tensor], torch.Tensor], steps: int,
             optimizer: str = "lbfgs") -> Optimized:
    """Minimize ``losses(pixels).sum()`` over the pixels ``sigmoid(logits)``: `steps` Adam steps, or
    `steps` L-BFGS iterations (at most 1.25 evaluations each on average, torch's default cap)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    variable = logits.detach().contiguous().clone().requires_grad_(True)  # L-BFGS views it flat
    curve: list[torch.Tensor] = []

    def evaluate() -> torch.Tensor:
        per_image = losses(torch.sigmoid(variable))
        curve.append(per_image.detach())
        total = per_image.sum()
        total.backward()
        return total

    if optimizer == "adam":
        adam = torch.optim.Adam([variable], lr=ADAM_LR)
        for _ in range(steps):
            adam.zero_grad(set_to_none=True)
            evaluate()
            adam.step()
    elif steps > 0:
        # One call with max_iter=steps: repeated one-iteration calls restart the step length each time
        # and stall (measured on the demo net: a 10x loss drop, then no progress).
        lbfgs = torch.optim.LBFGS([variable], lr=1.0, max_iter=steps, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-10, tolerance_change=1e-12)

        def closure() -> torch.Tensor:
            lbfgs.zero_grad(set_to_none=True)
            return evaluate()

        lbfgs.step(closure)
    with torch.no_grad():
        pixels = torch.sigmoid(variable)
        curve.append(losses(pixels).detach())
    return Optimized(pixels.detach(), torch.stack(curve))
