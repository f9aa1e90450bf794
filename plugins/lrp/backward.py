"""Forward as the model computes it, backward as LRP says: autograd carries relevance instead of gradient.

Zennit's idea: if every layer's backward returns the relevance of its input given the relevance
of its output, one ``torch.autograd.grad`` from the output to the input is the whole LRP pass.
Three autograd functions do it:

- :func:`with_rule`: a Conv, Linear, pooling or BatchNorm layer whose backward is an LRP rule;
- :func:`passing`: an activation whose backward hands relevance down unchanged (the ReLU rule
  of LRP: a unit's relevance is that of its pre-activation), in place when the activation is;
- :func:`residual_sum`: ``a + b`` whose backward splits the sum's relevance in proportion to the
  summands (the residual connection of a ResNet block); :func:`in_place_sum` the same for
  ``a += b``, which keeps the summand it overwrites.

Max pooling, flattening, dropout and concatenation keep their ordinary backward: it already
routes each output's relevance to the input it came from.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from nnvis_plugins.lrp.rules import STABILIZER, Rule, stabilize

Record = Callable[[torch.Tensor], None]


class _WithRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: nn.Module, rule: Rule, compute: Callable, record: Record | None):  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.layer, ctx.rule, ctx.record = layer, rule, record
        return compute(x)

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        with torch.enable_grad():  # the rule differentiates the layer's modified forward passes
            lower = ctx.rule(ctx.layer, x, relevance).detach()
        if ctx.record is not None:
            ctx.record(lower)
        return lower, None, None, None, None


def with_rule(layer: nn.Module, rule: Rule, x: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor],
              record: Record | None = None) -> torch.Tensor:
    """``compute(x)`` (the layer's forward), whose backward is ``rule``; ``record`` sees the relevance of x."""
    return _WithRule.apply(x, layer, rule, compute, record)


class _Passing(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]):  # type: ignore[override]
        out = compute(x)
        if out is x:  # an in-place activation: x now holds the output, and its history goes through here
            ctx.mark_dirty(x)
        return out

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):  # type: ignore[override]
        return relevance, None


def passing(x: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``compute(x)`` (an activation, in place or not), whose backward passes relevance through unchanged."""
    return _Passing.apply(x, compute)


class _ResidualSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, epsilon: float):  # type: ignore[override]
        ctx.save_for_backward(a, b)
        ctx.epsilon = epsilon
        return a + b

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):  # type: ignore[override]
        a, b = ctx.saved_tensors
        share = relevance / stabilize(a + b, ctx.epsilon)
        return (a * share).sum_to_size(a.shape), (b * share).sum_to_size(b.shape), None  # a summand may be broadcast


def residual_sum(a: torch.Tensor, b: torch.Tensor, epsilon: float = STABILIZER) -> torch.Tensor:
    """``a + b``, whose backward gives each summand its share of the relevance: R_a = a R / (a + b);
    epsilon keeps the denominator from zero."""
    return _ResidualSum.apply(a, b, epsilon)


class _InPlaceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, epsilon: float):  # type: ignore[override]
        ctx.before, ctx.other, ctx.epsilon = a.detach().clone(), b.detach(), epsilon  # a is about to change
        ctx.other_carries = b.requires_grad
        a.add_(b)
        ctx.mark_dirty(a)
        return a

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):  # type: ignore[override]
        a, b = ctx.before, ctx.other
        share = relevance / stabilize(a + b, ctx.epsilon)
        return (a * share).sum_to_size(a.shape), (b * share).sum_to_size(b.shape) if ctx.other_carries else None, None


def in_place_sum(a: torch.Tensor, b: torch.Tensor | float, epsilon: float = STABILIZER) -> torch.Tensor:
    """``a += b`` in place, whose backward gives each summand its share as :func:`residual_sum` does (a
    constant b's share is lost, as a bias's)."""
    other = b if isinstance(b, torch.Tensor) else torch.as_tensor(b, dtype=a.dtype, device=a.device)
    return _InPlaceSum.apply(a, other, epsilon)
