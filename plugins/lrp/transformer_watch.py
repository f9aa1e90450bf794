"""What AttnLRP does with the functions a transformer calls between its layers, and which modules it knows.

:class:`TransformerWatch` extends the LRP watch (functional.py: activations pass relevance, scalings
by a constant too, means and sums with a constant get the epsilon rule, unknown calls are refused)
with the rules of transformer_rules.py, for every call on a tensor that carries relevance (on the
copy, every parameter is a constant: only what comes from the input carries):

- ``F.scaled_dot_product_attention`` (timm's fused attention) and ``F.multi_head_attention_forward``
  (``nn.MultiheadAttention``, torchvision's ViT; its fused fast path is skipped while a
  torch-function mode is active) are computed explicitly: in- and out-projections by the Linear
  rule, then :func:`~nnvis_plugins.lrp.transformer_rules.attend`;
- an explicit softmax (timm with fused attention off) gets the softmax rule, a matrix product
  the bilinear rule (with one constant factor, the epsilon rule), and ``F.linear`` with constant
  weights (torchvision's Swin, EVA's and BEiT's projections with a bias of their own) the rule of
  Linear layers, as the projections inside ``nn.MultiheadAttention`` get it;
- a sum or difference of two activations (a residual connection) shares relevance in proportion
  to the summands;
- ``F.layer_norm`` called as a function gets the LayerNorm rule, as LayerNorm modules do, and
  ``F.normalize`` (the cosine attention of Swin V2 and XCiT) the identity rule the LayerNorm rule
  gives its division by the standard deviation (the norm held constant).

Products and quotients of two activations other than a matrix product are refused, with the module
they ran in, as are the non-linearities and unknown calls functional.py refuses.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nnvis_core.toolkit import AttributionError
from nnvis_plugins.lrp import calls, layers
from nnvis_plugins.lrp.backward import passing, residual_sum, with_rule
from nnvis_plugins.lrp.functional import FunctionalWatch, carries
from nnvis_plugins.lrp.rules import Rule
from nnvis_plugins.lrp.transformer_rules import Norm, attend, bilinear, layer_norm, projection, softmax

TRANSFORMER_LAYERS = (nn.LayerNorm, nn.MultiheadAttention)
SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax}


def _argument(args: tuple, kwargs: dict, position: int, name: str, default=None):
    return args[position] if len(args) > position else kwargs.get(name, default)


class TransformerWatch(FunctionalWatch):
    """The LRP watch, with AttnLRP's rules for attention, products, sums and normalization."""

    method = "AttnLRP"
    gate_note = ""  # it does split sums

    def __init__(self, where: Callable[[], str], linear_rule: Rule, held: bool = False, epsilon: float = 1e-6,
                 stabilizer: float = 1e-8) -> None:
        """linear_rule: that of projections inside nn.MultiheadAttention; held: CP-LRP; epsilon: the LayerNorm
        rule's; stabilizer: what keeps the denominators of sums, means and matrix products from zero."""
        super().__init__(where, stabilizer)
        self.linear_rule, self.held, self.epsilon = linear_rule, held, epsilon

    def _rule_for(self, func, args: tuple, kwargs: dict) -> Callable[[], torch.Tensor] | None:
        """AttnLRP's rule for the call, else functional.py's."""
        if func is F.scaled_dot_product_attention:
            return lambda: self._scaled_dot_product(args, kwargs)
        if func is F.multi_head_attention_forward:
            return lambda: self._multi_head(func, args, kwargs)
        if func in SOFTMAX:
            return lambda: self._softmax(args, kwargs)
        if func is F.layer_norm:
            return lambda: self._layer_norm(args, kwargs)
        if func is F.linear:
            x, weight, bias = (_argument(args, kwargs, i, name) for i, name in enumerate(("input", "weight", "bias")))
            if carries(x) and not carries(weight) and not carries(bias):
                return lambda: self._linear(x, weight, bias)
        if func is F.normalize and carries(_argument(args, kwargs, 0, "input")):
            return lambda: passing(_argument(args, kwargs, 0, "input"),
                                   lambda x: F.normalize(x, *args[1:], **{k: v for k, v in kwargs.items()
                                                                          if k != "input"}))
        if len(args) == 2 and not kwargs and (func in calls.MATMUL or func in calls.RIGHT_MATMUL):
            a, b = args if func in calls.MATMUL else args[::-1]
            return lambda: bilinear(a, b, self.stabilizer)  # with one constant factor, the epsilon rule
        if len(args) == 2 and not kwargs and carries(args[0]) and carries(args[1]):
            both = self._both_carry(func, *args)
            if both is not None:
                return both
        return super()._rule_for(func, args, kwargs)

    def _both_carry(self, func, a: torch.Tensor, b: torch.Tensor) -> Callable[[], torch.Tensor] | None:
        """A sum or difference of two activations, or None (functional.py refuses the rest)."""
        if func in calls.IN_PLACE_SUMS:
            return lambda: self.in_place(a, passing(b, torch.neg) if func in calls.IN_PLACE_DIFFERENCES else b)
        if func in calls.SUMS:
            return lambda: residual_sum(a, b, self.stabilizer)
        if func in calls.DIFFERENCES or func in calls.RIGHT_DIFFERENCES:  # -b's contribution is b's
            left, right = (a, b) if func in calls.DIFFERENCES else (b, a)
            return lambda: residual_sum(left, passing(right, torch.neg), self.stabilizer)
        if func in calls.PRODUCTS or func in calls.QUOTIENTS:
            self._refuse(f"the {'quotient' if func in calls.QUOTIENTS else 'product'} of two activations "
                         "(AttnLRP's uniform rule is implemented for matrix products only)")
        return None

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


def _detached(value: torch.Tensor | None) -> torch.Tensor | None:
    return None if value is None else value.detach()


def refusal(name: str, module: nn.Module) -> str | None:
    """Why AttnLRP cannot go through this module, or None: as LRP judges it (layers.py), LayerNorm and
    nn.MultiheadAttention having rules of their own."""
    return None if isinstance(module, TRANSFORMER_LAYERS) else layers.refusal(name, module, method="AttnLRP")


def check_supported(ran: list[tuple[str, nn.Module]]) -> None:
    """Raise AttributionError naming the first module that ran and has no rule."""
    for name, module in ran:
        reason = refusal(name, module)
        if reason is not None:
            raise AttributionError(reason)
