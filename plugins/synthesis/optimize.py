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
    diverged: int | None = None  # the evaluation at which the loss stopped being finite, if it did

    def note(self) -> str:
        """What a caption says about a run that diverged ("" when it did not)."""
        if self.diverged is None:
            return ""
        return (f"the loss stopped being finite at evaluation {self.diverged} (the optimizer diverged): the "
                "picture is the best finite one before it, and the curve stops there")


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
    best = [float("inf"), variable.detach().clone()]  # the lowest finite total loss, and where it was

    def evaluate() -> torch.Tensor:
        per_image = losses(torch.sigmoid(variable))
        curve.append(per_image.detach())
        total = per_image.sum()
        if not torch.isfinite(total):
            raise _Diverged  # torch's L-BFGS line search fails on a NaN (an IndexError) rather than stop
        if float(total.detach()) < best[0]:
            best[:] = [float(total.detach()), variable.detach().clone()]
        total.backward()
        return total

    try:
        _run(optimizer, variable, evaluate, steps)
    except _Diverged:
        pass
    with torch.no_grad():
        pixels = torch.sigmoid(variable)
        final = losses(pixels).detach()
        diverged = next((i for i, values in enumerate(curve) if not torch.isfinite(values).all()), None)
        if diverged is not None or not torch.isfinite(final).all():
            # A random net's huge activations can send L-BFGS's line search to infinity: keep what was
            # reached before, rather than a NaN picture or a curve no chart can draw.
            diverged = len(curve) if diverged is None else diverged
            curve = curve[:diverged]
            pixels = torch.sigmoid(best[1])
            final = losses(pixels).detach()
        curve.append(final)
    return Optimized(pixels.detach(), torch.stack(curve), diverged)


class _Diverged(Exception):
    """The loss stopped being finite: the optimizer loop ends there."""


def _run(optimizer: str, variable: torch.Tensor, evaluate: Callable[[], torch.Tensor], steps: int) -> None:
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
