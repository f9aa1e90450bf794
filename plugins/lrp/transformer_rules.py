"""AttnLRP's rules for what a transformer adds to a convnet: softmax, products of two activations, LayerNorm.

Achtibat et al. 2024 ("AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for Transformers",
ICML) derive them; each is an autograd function in the style of backward.py (the forward as the
model computes it, the backward returning the relevance of the inputs):

- :func:`softmax`: Proposition 3.1, the Taylor decomposition of softmax at its own input, bias kept:
  ``R_i = x_i (R^out_i - s_i sum_j R^out_j)``. Not conservative: the bias term takes the rest.
- :func:`bilinear`: a matrix product of two activations (``Q K^T`` and ``A V``), Proposition 3.3:
  the epsilon rule on the product, then the uniform rule, half the relevance to each factor:
  ``R_a = a * ((R / 2z) @ b^T)``, ``R_b = b * (a^T @ (R / 2z))``. Conservative. With one factor a
  constant it is the epsilon rule for the other.
- :func:`layer_norm`: Proposition 3.4, the identity rule on the division by the standard deviation
  (held constant), the epsilon rule on the rest, an affine map: ``y = M x + b`` with
  ``M = diag(w / std) (I - 1/n)``, ``R_j = x_j sum_i M_ij R_i / y_i``. Conservative without bias.
- :func:`attend`: ``softmax(q k^T * scale) @ v`` from the three, the scale by the identity rule
  (a product with a constant, which the epsilon rule leaves unchanged). ``held=True`` is CP-LRP
  (Ali et al. 2022, "XAI for Transformers: Better Explanations through Conservative Propagation";
  LXT's choice inside the attention of torchvision's ViT): the attention weights count as
  constants, all relevance goes through the values, and the whole attention is conservative.

Element-wise non-linearities (GELU) get the identity rule, which backward.passing already is.
Denominators are pushed away from zero by the house stabilizer (rules.stabilize, 1e-6 on the
denominator's own side), epsilon's by epsilon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nnvis_plugins.lrp.backward import passing
from nnvis_plugins.lrp.rules import STABILIZER, stabilize


class _Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int):  # type: ignore[override]
        probabilities = torch.softmax(x, dim=dim)
        ctx.save_for_backward(x, probabilities)
        ctx.dim = dim
        return probabilities

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):  # type: ignore[override]
        x, probabilities = ctx.saved_tensors
        x = torch.where(torch.isneginf(x), torch.zeros_like(x), x)  # masked positions hold nothing
        total = relevance.sum(ctx.dim, keepdim=True)
        return x * (relevance - probabilities * total), None


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``softmax(x, dim)``, whose backward is AttnLRP's softmax rule: R_i = x_i (R_i - s_i sum_j R_j)."""
    return _Softmax.apply(x, dim)


class _Bilinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, epsilon: float):  # type: ignore[override]
        ctx.save_for_backward(a, b)
        ctx.epsilon = epsilon
        return torch.matmul(a, b)

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):  # type: ignore[override]
        carrying = ctx.needs_input_grad[:2]
        with torch.enable_grad():
            a, b = (value.detach().requires_grad_(needed) for value, needed in zip(ctx.saved_tensors, carrying))
            z = torch.matmul(a, b)
            # Uniform over the factors that carry relevance: 1/2 each for Q K^T and A V, all of it for one.
            share = relevance / stabilize(z * sum(carrying), ctx.epsilon)
            leaves = [value for value in (a, b) if value.requires_grad]
            pulled = iter(torch.autograd.grad(z, leaves, share))
        return (*(value.detach() * next(pulled) if value.requires_grad else None for value in (a, b)), None)


def bilinear(a: torch.Tensor, b: torch.Tensor, epsilon: float = STABILIZER) -> torch.Tensor:
    """``a @ b``, whose backward gives each factor carrying relevance an equal part by the epsilon rule
    (epsilon moves 2 a @ b away from zero)."""
    return _Bilinear.apply(a, b, epsilon)


@dataclass(frozen=True)
class Norm:
    """What a LayerNorm normalizes by: the trailing shape, the affine weight and bias, the variance's eps."""

    shape: tuple[int, ...]
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float

    @classmethod
    def of(cls, module: nn.LayerNorm) -> Norm:
        return cls(tuple(module.normalized_shape), _constant(module.weight), _constant(module.bias), module.eps)


def _constant(value: torch.Tensor | None) -> torch.Tensor | None:
    return None if value is None else value.detach()


def held_layer_norm(x: torch.Tensor, norm: Norm) -> torch.Tensor:
    """LayerNorm with its standard deviation held constant: the affine map the rule distributes over."""
    dims = tuple(range(-len(norm.shape), 0))
    centred = x - x.mean(dim=dims, keepdim=True)
    std = (x.detach().var(dim=dims, unbiased=False, keepdim=True) + norm.eps).sqrt()
    y = centred / std
    if norm.weight is not None:
        y = y * norm.weight
    if norm.bias is not None:
        y = y + norm.bias
    return y


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, norm: Norm, epsilon: float):  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.norm, ctx.epsilon = norm, epsilon
        return F.layer_norm(x, norm.shape, norm.weight, norm.bias, norm.eps)

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            y = held_layer_norm(x, ctx.norm)
            (pulled,) = torch.autograd.grad(y, x, relevance / stabilize(y, ctx.epsilon))
        return x.detach() * pulled, None, None


def layer_norm(x: torch.Tensor, norm: Norm, epsilon: float = STABILIZER) -> torch.Tensor:
    """``F.layer_norm(x, ...)`` as the model computes it, whose backward is AttnLRP's LayerNorm rule."""
    return _LayerNorm.apply(x, norm, epsilon)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
           held: bool = False, epsilon: float = STABILIZER) -> torch.Tensor:
    """``softmax(q k^T * scale) @ v`` over (..., tokens, head width) with AttnLRP's rules (CP-LRP if held).

    scale defaults to 1 / sqrt(head width), as F.scaled_dot_product_attention's; epsilon is the
    matrix products' stabilizer.
    """
    factor = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if held:
        with torch.no_grad():
            weights = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * factor, dim=-1)
        return bilinear(weights, v, epsilon)
    # The scale on q, before the product, as timm and LXT apply it: the product's stabilizer then sees the logits.
    logits = bilinear(passing(q, lambda queries: queries * factor), k.transpose(-2, -1), epsilon)
    return bilinear(softmax(logits, dim=-1), v, epsilon)


def projection(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A Linear layer around existing tensors (a packed in-projection's slice), for the rules of rules.py
    to read; nothing is allocated or copied."""
    layer = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(layer)
    layer.weight, layer.bias = weight, bias  # plain attributes: not registered as parameters
    layer.in_features, layer.out_features = weight.shape[1], weight.shape[0]
    return layer
