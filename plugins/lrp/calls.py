"""What the torch calls a model makes between its layers do to relevance, for the watch (functional.py).

Relevance flows backward through autograd, so a call that keeps its ordinary backward hands each
input the gradient of the relevance, which is LRP's rule only for some calls. The watch sorts every
call on a tensor that carries relevance into one of these groups, and refuses the rest:

- ROUTING: each output value is a copy of one input value (reshapes, permutations, selections,
  concatenation, padding, rolls, casts, max pooling, dropout in eval mode). The gradient routes each
  output's relevance to the value it came from, which is the rule; a value copied twice gets both
  shares, as a branch does.
- LINEAR: maps linear in the carrying input (a mean or sum over axes, an interpolation). They get the
  epsilon rule, R_j = x_j sum_k (dz_k / dx_j) R_k / z_k: the gradient alone would split a mean's
  relevance evenly instead of in proportion to the summands.
- SCALINGS (a product with or a quotient by a constant, NEGATIONS): the epsilon rule on z = c x is
  R_x = R, relevance passes unchanged. The gradient would scale it by c, and flip its sign under a
  negation.
- SUMS and DIFFERENCES with a constant: the epsilon rule, the constant's share lost as a bias's is.

Anything else on a carrying tensor that returns one is refused by name: the gradient of a function
nobody checked is not a rule.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F


def forms(*names: str) -> set[Callable[..., Any]]:
    """The torch.* and Tensor.* functions of these names (those that exist)."""
    return {getattr(owner, name) for owner in (torch, torch.Tensor) for name in names if hasattr(owner, name)}


ROUTING: set[Callable[..., Any]] = forms(
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "squeeze", "unsqueeze", "contiguous",
    "permute", "transpose", "t", "swapaxes", "swapdims", "movedim", "moveaxis", "expand", "expand_as", "repeat",
    "tile", "cat", "concat", "concatenate", "stack", "split", "tensor_split", "chunk", "unbind", "narrow",
    "select", "index_select", "gather", "take_along_dim", "__getitem__", "roll", "flip", "clone", "masked_fill",
    "where", "to", "type", "type_as", "float", "double", "half", "bfloat16", "unfold", "max", "amax", "copy_",
    "repeat_interleave", "split_with_sizes", "squeeze_", "unsqueeze_", "transpose_",
) | {
    F.pad, F.unfold, F.pixel_shuffle, F.pixel_unshuffle, F.channel_shuffle, torch.nn.functional.native_channel_shuffle,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.max_pool1d_with_indices, F.max_pool2d_with_indices,
    F.max_pool3d_with_indices, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
    F.adaptive_max_pool1d_with_indices, F.adaptive_max_pool2d_with_indices, F.adaptive_max_pool3d_with_indices,
}
# Tensor attributes that are copies of it (x.T), reached as a descriptor's __get__.
ROUTING_ATTRIBUTES = {"T", "mT", "H", "mH", "real"}

REDUCTIONS = forms("mean", "sum")
INTERPOLATIONS = {F.interpolate, F.upsample, F.upsample_bilinear, F.upsample_nearest}
LINEAR = REDUCTIONS | INTERPOLATIONS

SUMS = forms("add", "__add__", "__iadd__", "__radd__")
DIFFERENCES = forms("sub", "subtract", "__sub__", "__isub__")
RIGHT_DIFFERENCES = forms("__rsub__")
PRODUCTS = forms("mul", "multiply", "__mul__", "__imul__", "__rmul__", "mul_")
QUOTIENTS = forms("div", "divide", "true_divide", "__truediv__", "__itruediv__", "div_")
NEGATIONS = forms("neg", "negative", "__neg__", "neg_")
IN_PLACE_DIFFERENCES = forms("sub_", "__isub__")  # x -= y arrives as sub_
IN_PLACE_SUMS = forms("add_", "__iadd__") | IN_PLACE_DIFFERENCES
MATMUL = forms("matmul", "bmm", "__matmul__")
RIGHT_MATMUL = forms("__rmatmul__")

# A Linear or convolution written as a function: its weight is a constant, but which rule of the
# composite it should get (its module would say) is unknown.
LINEAR_MAPS = {F.linear, F.bilinear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
               F.conv_transpose3d}


def routes(func: Callable[..., Any]) -> bool:
    """Whether the call's ordinary backward already is the rule (ROUTING, or x.T and its kind)."""
    if func in ROUTING:
        return True
    owner = getattr(func, "__self__", None)
    return getattr(func, "__name__", "") == "__get__" and getattr(owner, "__name__", "") in ROUTING_ATTRIBUTES


def name_of(func: Callable[..., Any]) -> str:
    """A call as a user would write it: torch.erf, Tensor.cumsum, Tensor.H."""
    owner = getattr(func, "__self__", None)
    if getattr(func, "__name__", "") == "__get__" and owner is not None:
        return f"Tensor.{getattr(owner, '__name__', '?')}"
    name = getattr(func, "__name__", repr(func))
    module = getattr(func, "__module__", "") or ""
    if module.startswith("torch.nn.functional"):
        return f"F.{name}"
    qualified = getattr(func, "__qualname__", name)
    return f"Tensor.{name}" if qualified.startswith(("TensorBase.", "Tensor.")) else f"torch.{name}"
