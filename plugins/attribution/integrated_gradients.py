"""Integrated Gradients (Sundararajan, Taly, Yan 2017, "Axiomatic Attribution for Deep Networks").

attribution = (x - baseline) * integral over a in [0, 1] of d score / d x at baseline + a (x - baseline),
approximated with `steps` points of a quadrature rule. Completeness says the
attributions sum to score(x) - score(baseline); the gap is the approximation error.

>>> from nnvis_plugins.attribution import integrated_gradients as ig
>>> maps, delta = ig.attribute(model, images, target=3, steps=50, return_delta=True)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nnvis_core import Param, hookimpl
from nnvis_core.toolkit import (
    FAITHFULNESS_STEPS,
    TARGET,
    AttributionPlugin,
    Explanation,
    Target,
    check_target_count,
    fresh_input_gradient,
    pixel_baseline,
    reduce_param,
    select_target,
    target_scores,
)

METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right")


def integration_points(steps: int, method: str = "gausslegendre") -> tuple[list[float], list[float]]:
    """Points a in [0, 1] and their weights for the path integral."""
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return list(0.5 * nodes + 0.5), list(0.5 * weights)
    if method == "riemann_trapezoid":
        if steps < 2:
            raise ValueError("riemann_trapezoid needs at least 2 steps")
        alphas = list(np.linspace(0, 1, steps))
        inner = 1 / (steps - 1)
        return alphas, [inner / 2] + [inner] * (steps - 2) + [inner / 2]
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}.get(method)
    if offset is None:
        raise ValueError(f"unknown integration method {method!r}; use one of {', '.join(METHODS)}")
    return [(i + offset) / steps for i in range(steps)], [1 / steps] * steps


def attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target,
    baselines: torch.Tensor | float | None = None,
    steps: int = 50,
    method: str = "gausslegendre",
    batch_size: int | None = None,
    return_delta: bool = False,
    rule: str | None = None,
):
    """(N, C, H, W) Integrated Gradients of `target`; baselines default to zeros.

    All `steps x N` path points go through the model in chunks of `batch_size` (None: one pass).
    return_delta: also return the completeness gap per input,
    sum(attribution) - (score(x) - score(baseline)).
    """
    x = inputs.detach()
    n = x.shape[0]
    if baselines is None:
        baselines = 0.0
    base = torch.as_tensor(baselines, dtype=x.dtype, device=x.device).expand_as(x)
    alphas, weights = integration_points(steps, method)
    difference = x - base
    alpha = torch.tensor(alphas, dtype=x.dtype, device=x.device)
    weight = torch.tensor(weights, dtype=x.dtype, device=x.device)
    per_row = (-1,) + (1,) * (x.dim() - 1)
    # Path points are built chunk by chunk (input-major: row r is input r // steps at point r % steps),
    # so memory stays at `batch_size` images however many steps are asked for.
    check_target_count(target, n)
    rows = n * steps
    chunk = rows if not batch_size or batch_size >= rows else batch_size
    total = torch.zeros_like(x)
    for start in range(0, rows, chunk):
        row = torch.arange(start, min(start + chunk, rows), device=x.device)
        which, point = row // steps, row % steps
        # baseline + alpha * difference, written as Captum writes it: the same rounding, so that
        # no ReLU unit sitting at 0 flips between the two. One input: broadcast, no gathered copies.
        if n == 1:
            path = base + alpha[point].view(per_row) * difference
        else:
            path = base[which] + alpha[point].view(per_row) * difference[which]
        grads = fresh_input_gradient(model, path, select_target(target, which), rule)
        if n == 1:
            total += torch.tensordot(weight[point], grads, dims=1)
        else:
            total.index_add_(0, which, grads * weight[point].view(per_row))
    attributions = total * difference
    if not return_delta:
        return attributions
    with torch.no_grad():
        change = target_scores(model(x), target) - target_scores(model(base.contiguous()), target)
    delta = attributions.flatten(1).sum(1) - change
    return attributions, delta


def _scores_for_gap(model: nn.Module, x: torch.Tensor, base: torch.Tensor, target: int) -> tuple[float, float]:
    with torch.no_grad():
        out = model(torch.cat([x, base]))[:, target]
    return float(out[0]), float(out[1])


class IntegratedGradients(AttributionPlugin):
    name = "integrated_gradients"
    title = "Integrated Gradients"
    description = (
        "Sundararajan et al. (2017): gradients averaged along the straight path from a baseline image to the "
        "input, times the difference. The attributions add up to the change of the class score (logit) from the "
        "baseline; the completeness gap metric is how far the approximation is from that."
    )
    label = "attribution"
    params = (
        TARGET,
        Param("steps", int, 50, "points on the path", minimum=2, maximum=2000),
        Param("baseline", str, "black", "start of the path: black, blur (input blurred) or noise (uniform pixels)",
              choices=("black", "blur", "noise")),
        Param("method", str, "gausslegendre", "quadrature rule", choices=METHODS),
        reduce_param("sum"),
        FAITHFULNESS_STEPS,
    )

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        preprocess = ctx.model.preprocess
        black = preprocess.normalize(item.pixels * 0)
        mean = torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1)
        base = pixel_baseline(params["baseline"], inputs, black, normalize=lambda u: (u - mean) / std)
        attributions = attribute(ctx.module, inputs, target, base, params["steps"], params["method"],
                                 batch_size=ctx.batch_size)
        score, base_score = _scores_for_gap(ctx.module, inputs, base, target)
        total = float(attributions.sum())
        gap = total - (score - base_score)
        metrics = {
            "completeness_gap": abs(gap),
            "completeness_gap_relative": abs(gap) / max(abs(score - base_score), 1e-12),
            "score_change": score - base_score,
        }
        caption = (f"{params['baseline']} baseline, {params['steps']} steps; "
                   f"sum {total:.4g} vs score change {score - base_score:.4g}")
        return Explanation(attributions[0], caption, metrics=metrics, completes_from=base)


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(IntegratedGradients())
