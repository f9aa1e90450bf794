"""What AttnLRP does with the functions a transformer calls between its layers, and which modules it knows.

:class:`TransformerWatch` extends the LRP watch (functional.py, activations pass relevance) with
the rules of transformer_rules.py, for every call on a tensor that carries relevance (on the
copy, every parameter is a constant: only what comes from the input carries):

- ``F.scaled_dot_product_attention`` (timm's fused attention) and ``F.multi_head_attention_forward``
  (``nn.MultiheadAttention``, torchvision's ViT; its fused fast path is skipped while a
  torch-function mode is active) are computed explicitly: in- and out-projections by the Linear
  rule, then :func:`~nnvis_plugins.lrp.transformer_rules.attend`;
- an explicit softmax (timm with fused attention off) gets the softmax rule, a matrix product
  the bilinear rule;
- a sum or difference (a residual connection, the position embedding added to the tokens) shares
  relevance in proportion to the summands (epsilon rule on the sum; a constant summand's share is
  lost, like a bias's); a mean or sum over axes (token pooling) likewise;
- a product with or quotient by a constant (the attention scale, LayerScale) passes relevance
  unchanged (the epsilon rule on an element-wise linear map);
- ``F.layer_norm`` called as a function gets the LayerNorm rule, as LayerNorm modules do.

A Linear or convolution called as a function outside its module (which would give the gradient,
not a rule) is refused with the module it ran in, as are products of two activations other than
a matrix product, and the non-linearities functional.py refuses.
"""

from __future__ import annotations

import inspect
from typing import Callable, NoReturn

import torch
import torch.nn.functional as F
from torch import nn

from nnvis_core.toolkit import AttributionError
from nnvis_plugins.lrp import layers
from nnvis_plugins.lrp.backward import passing, residual_sum, with_rule
from nnvis_plugins.lrp.functional import FunctionalWatch, proportional_call
from nnvis_plugins.lrp.rules import Rule
from nnvis_plugins.lrp.transformer_rules import Norm, attend, bilinear, layer_norm, projection, softmax

TRANSFORMER_LAYERS = (nn.LayerNorm, nn.MultiheadAttention)
KNOWN = (f"{layers.KNOWN}, LayerNorm, nn.MultiheadAttention, and any module whose forward calls "
         "F.scaled_dot_product_attention or writes attention out with softmax and matrix products")


def _forms(*names: str) -> set:
    return {getattr(owner, name) for owner in (torch, torch.Tensor) for name in names if hasattr(owner, name)}


SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax}
MATMUL = _forms("matmul", "bmm", "__matmul__")
RIGHT_MATMUL = _forms("__rmatmul__")
SUMS = _forms("add", "__add__", "__iadd__", "__radd__")
DIFFERENCES = _forms("sub", "subtract", "__sub__", "__isub__")
RIGHT_DIFFERENCES = _forms("__rsub__")
PRODUCTS = _forms("mul", "multiply", "__mul__", "__imul__", "__rmul__")
QUOTIENTS = _forms("div", "divide", "true_divide", "__truediv__", "__itruediv__")
REDUCTIONS = _forms("mean", "sum")
# Element-wise non-linearities a hand-written normalization may use; the gradient would not be a rule.
CURVES = _forms("__rtruediv__", "__rdiv__", "reciprocal", "sqrt", "rsqrt", "pow", "__pow__", "__rpow__", "log")
LINEAR_MAPS = {F.linear, F.bilinear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
               F.conv_transpose3d}


def _carries(value: object) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad


def _argument(args: tuple, kwargs: dict, position: int, name: str, default=None):
    return args[position] if len(args) > position else kwargs.get(name, default)


class TransformerWatch(FunctionalWatch):
    """The LRP watch, with AttnLRP's rules for attention, products, sums and normalization."""

    def __init__(self, where: Callable[[], str], linear_rule: Rule, held: bool = False, epsilon: float = 1e-6,
                 stabilizer: float = 1e-8) -> None:
        """linear_rule: that of projections inside nn.MultiheadAttention; held: CP-LRP; epsilon: the LayerNorm
        rule's; stabilizer: what keeps the denominators of sums, means and matrix products from zero."""
        super().__init__(where)
        self.linear_rule, self.held, self.epsilon, self.stabilizer = linear_rule, held, epsilon, stabilizer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if torch.is_grad_enabled() and any(_carries(value) for value in (*args, *kwargs.values())):
            handled = self._rule_for(func, args, kwargs)
            if handled is not None:
                return handled()
        return super().__torch_function__(func, types, args, kwargs)

    def _rule_for(self, func, args: tuple, kwargs: dict) -> Callable[[], torch.Tensor] | None:
        """The computation with its rule, or None for what functional.py decides (activations, refusals, the rest)."""
        if func is F.scaled_dot_product_attention:
            return lambda: self._scaled_dot_product(args, kwargs)
        if func is F.multi_head_attention_forward:
            return lambda: self._multi_head(func, args, kwargs)
        if func in SOFTMAX:
            return lambda: self._softmax(args, kwargs)
        if func is F.layer_norm:
            return lambda: self._layer_norm(args, kwargs)
        if func in LINEAR_MAPS:
            self._refuse(f"{func.__name__} called as a function (only Linear and Conv modules get a rule)")
        if func in CURVES:
            self._refuse(f"the non-linearity {func.__name__}")
        if func in REDUCTIONS:
            return lambda: proportional_call(args[0], lambda x: func(x, *args[1:], **kwargs), self.stabilizer)
        binary = self._binary(func, args, kwargs)
        return None if binary is None else lambda: binary(args[0], args[1])

    def _binary(self, func, args: tuple, kwargs: dict) -> Callable[[object, object], torch.Tensor] | None:
        if len(args) != 2 or kwargs:  # alpha=, out=, rounding_mode=: none of a transformer's
            return None
        if func in MATMUL:
            return lambda a, b: bilinear(a, b, self.stabilizer)
        if func in RIGHT_MATMUL:
            return lambda a, b: bilinear(b, a, self.stabilizer)
        if func in SUMS:
            return self._sum
        if func in DIFFERENCES:
            return self._difference
        if func in RIGHT_DIFFERENCES:
            return lambda a, b: self._difference(b, a)
        if func in PRODUCTS | QUOTIENTS:
            return lambda a, b: self._scaling(func, a, b, quotient=func in QUOTIENTS)
        return None

    def _sum(self, a: object, b: object) -> torch.Tensor:
        if _carries(a) and _carries(b):
            return residual_sum(a, b, self.stabilizer)
        carrier, other = (a, b) if _carries(a) else (b, a)
        return proportional_call(carrier, lambda x: x + other, self.stabilizer)

    def _difference(self, a: object, b: object) -> torch.Tensor:
        if _carries(a) and _carries(b):
            return residual_sum(a, passing(b, torch.neg), self.stabilizer)  # -b's contribution is b's
        if _carries(a):
            return proportional_call(a, lambda x: x - b, self.stabilizer)
        return proportional_call(b, lambda x: a - x, self.stabilizer)

    def _scaling(self, func, a: object, b: object, quotient: bool) -> torch.Tensor:
        if _carries(a) and _carries(b):
            self._refuse(f"the {'quotient' if quotient else 'product'} of two activations (AttnLRP's uniform rule "
                         "is implemented for matrix products only)")
        if quotient and _carries(b):
            self._refuse("a division by an activation")
        carrier, other = (a, b) if _carries(a) else (b, a)
        return passing(carrier, lambda x: func(x, other) if carrier is a else func(other, x))

    def _softmax(self, args: tuple, kwargs: dict) -> torch.Tensor:
        dim = _argument(args, kwargs, 1, "dim")
        if dim is None or _argument(args, kwargs, 2, "dtype") is not None:
            self._refuse("a softmax without dim or with dtype")
        return softmax(args[0], dim)

    def _layer_norm(self, args: tuple, kwargs: dict) -> torch.Tensor:
        shape = _argument(args, kwargs, 1, "normalized_shape")
        norm = Norm(tuple(shape), *(_argument(args, kwargs, i, name) for i, name in ((2, "weight"), (3, "bias"))),
                    _argument(args, kwargs, 4, "eps", 1e-5))
        return layer_norm(args[0], Norm(norm.shape, _detached(norm.weight), _detached(norm.bias), norm.eps),
                          self.epsilon)

    def _scaled_dot_product(self, args: tuple, kwargs: dict) -> torch.Tensor:
        q, k, v = (_argument(args, kwargs, i, name) for i, name in enumerate(("query", "key", "value")))
        if (_argument(args, kwargs, 3, "attn_mask") is not None or _argument(args, kwargs, 4, "dropout_p", 0.0)
                or _argument(args, kwargs, 5, "is_causal", False) or q.shape[:-2] != k.shape[:-2]):
            self._refuse("attention with a mask, causal masking, dropout or grouped heads")
        return attend(q, k, v, _argument(args, kwargs, 6, "scale"), self.held, self.stabilizer)

    def _multi_head(self, func, args: tuple, kwargs: dict):
        bound = inspect.signature(func).bind(*args, **kwargs)
        bound.apply_defaults()
        options = bound.arguments
        if any(options[name] is not None for name in ("bias_k", "bias_v", "static_k", "static_v", "key_padding_mask",
                                                       "attn_mask")) or options["add_zero_attn"] \
                or options["is_causal"] or (options["training"] and options["dropout_p"]):
            self._refuse("nn.MultiheadAttention with masks, extra keys or dropout")
        query, key, value = (options[name] for name in ("query", "key", "value"))
        unbatched = query.dim() == 2
        if unbatched:  # (L, E) -> (L, 1, E)
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if options["use_separate_proj_weight"]:
            weights = tuple(options[f"{name}_proj_weight"] for name in "qkv")
        else:
            weights = options["in_proj_weight"].chunk(3)
        bias = options["in_proj_bias"]
        biases = (None, None, None) if bias is None else bias.chunk(3)
        batch, heads = query.shape[1], options["num_heads"]
        q, k, v = (self._linear(x, w, b).reshape(x.shape[0], batch * heads, -1).transpose(0, 1)
                   .reshape(batch, heads, x.shape[0], -1) for x, w, b in zip((query, key, value), weights, biases))
        attended = attend(q, k, v, None, self.held, self.stabilizer)  # (B, heads, L, d)
        merged = attended.permute(2, 0, 1, 3).reshape(query.shape[0], batch, -1)
        output = self._linear(merged, options["out_proj_weight"], options["out_proj_bias"])
        output = output.squeeze(1) if unbatched else output
        if not options["need_weights"]:
            return output, None
        with torch.no_grad():  # what the caller asked for besides; it carries no relevance
            probabilities = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) / q.shape[-1] ** .5, dim=-1)
            probabilities = probabilities.mean(dim=1) if options["average_attn_weights"] else probabilities
        return output, probabilities[0] if unbatched else probabilities

    def _linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        weight, bias = weight.detach(), _detached(bias)
        return with_rule(projection(weight, bias), self.linear_rule, x, lambda value: F.linear(value, weight, bias))

    def _refuse(self, what: str) -> NoReturn:
        raise AttributionError(f"AttnLRP: no rule for {what} in {self.where()}")


def _detached(value: torch.Tensor | None) -> torch.Tensor | None:
    return None if value is None else value.detach()


def refusal(name: str, module: nn.Module) -> str | None:
    """Why AttnLRP cannot go through this module, or None: containers are judged by what their forward
    calls (the watch), leaves as LRP judges them, plus LayerNorm and nn.MultiheadAttention."""
    if isinstance(module, TRANSFORMER_LAYERS) or next(module.children(), None) is not None:
        return None
    return layers.refusal(name, module, method="AttnLRP", known=KNOWN)


def check_supported(calls: list[tuple[str, nn.Module]]) -> None:
    """Raise AttributionError naming the first module that ran and has no rule."""
    for name, module in calls:
        reason = refusal(name, module)
        if reason is not None:
            raise AttributionError(reason)
