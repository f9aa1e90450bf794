"""Gradients of a class score with respect to the input, batched, with an optional ReLU rule.

Every function takes a model and a normalized ``(N, C, H, W)`` batch and never
changes the model: gradients are taken with ``torch.autograd.grad`` with respect
to the inputs (or a captured activation) only, so parameter ``.grad`` stays
untouched, and every hook is removed in a ``finally``.
"""

from __future__ import annotations

import torch
from torch import nn

from nnvis_core.toolkit.rules import relu_rule
from nnvis_core.toolkit.targets import Target, check_target_count, chunk_target, target_scores


def gradient(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target,
    rule: str | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """d score / d inputs for every input, in chunks of at most `batch_size` inputs.

    rule: None for the true gradient, "guided" or "deconvnet" for a modified
    ReLU backward (see rules.py).
    """
    n = inputs.shape[0]
    check_target_count(target, n)
    step = n if not batch_size or batch_size >= n else batch_size
    parts = [
        fresh_input_gradient(model, inputs[start:start + step].detach().clone(),
                             chunk_target(target, start, start + step), rule)
        for start in range(0, n, step)
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def fresh_input_gradient(model: nn.Module, batch: torch.Tensor, target: Target,
                         rule: str | None = None) -> torch.Tensor:
    """d score / d batch in one pass, for a tensor made for this call (it is marked as requiring grad)."""
    batch.requires_grad_(True)
    with torch.enable_grad():
        if rule is None:
            output = model(batch)
        else:
            with relu_rule(model, rule):
                output = model(batch)
        (grad,) = torch.autograd.grad(target_scores(output, target).sum(), batch)
    return grad


def reduce_channels(attribution: torch.Tensor, how: str) -> torch.Tensor:
    """(..., C, H, W) -> (..., H, W): sum, abs_sum, abs_max or l2 over channels."""
    if how == "sum":
        return attribution.sum(dim=-3)
    if how == "abs_sum":
        return attribution.abs().sum(dim=-3)
    if how == "abs_max":
        return attribution.abs().amax(dim=-3)
    if how == "l2":
        return attribution.square().sum(dim=-3).sqrt()
    raise ValueError(f"unknown channel reduction {how!r}")
