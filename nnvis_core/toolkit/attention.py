"""Attention weights of a transformer's forward pass, even when it runs a fused kernel.

Most vision transformers never materialize their attention: torchvision's ViT
calls ``nn.MultiheadAttention`` with ``need_weights=False`` (its C++ fast path
in eval mode, else ``F.scaled_dot_product_attention``), timm's ``Attention``
calls ``F.scaled_dot_product_attention`` when fused attention is on. Inside
:func:`captured_attention`, a ``TorchFunctionMode`` sees every such call and
computes it step by step,

    weights = softmax(q k^T * scale + mask),     output = weights @ v,

keeping ``weights`` (with its graph when gradients are enabled, so a method can
take d score / d weights) and returning what the kernel would have returned,
equal to it up to float rounding (about 1e-7). What is intercepted:

- ``F.scaled_dot_product_attention``: computed explicitly (masks, ``is_causal``,
  ``scale``, grouped-query heads, dropout when the caller asks for it);
- ``F.multi_head_attention_forward`` (what ``nn.MultiheadAttention`` calls off its
  fast path): computed step by step (in-projection, the attention above with its
  masks, out-projection); the caller gets the weights it asked for (none, or
  averaged over heads). With ``bias_k``/``bias_v``, ``add_zero_attn`` or static
  keys it computes the weights itself and they are recorded detached (no
  gradient). The C++ fast path is not taken while a torch-function mode is
  active (``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` check
  ``has_torch_function`` before taking it), so nothing about the model has to
  change; should a fused kernel be called anyway, the capture raises rather than
  miss an attention;
- with ``explicit=True`` (the default), a softmax over the last dimension of a
  4-D ``(B, heads, N, N)`` tensor, which is how models that write their attention
  out compute it (torchvision's Swin, timm without fused attention): the softmax
  runs as it is and its output is recorded.

Nothing is attached to the model: no hooks, no swapped modules, no flags.

>>> with captured_attention(model) as attentions:
...     logits = model(images)
>>> [a.weights.shape for a in attentions]     # ViT-B/16 at 224 px: 12 x (N, 12, 197, 197)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from nnvis_core.toolkit.targets import AttributionError

FUSED, MULTI_HEAD, EXPLICIT = "scaled_dot_product_attention", "multi_head_attention", "softmax"

# Kernels that compute attention without ever exposing its weights; they are only
# reached when a model bypasses the has_torch_function checks, which the capture refuses.
_OPAQUE = tuple(getattr(torch, name) for name in ("_native_multi_head_attention", "_transformer_encoder_layer_fwd")
                if hasattr(torch, name))
_SOFTMAX = (F.softmax, torch.softmax, torch.Tensor.softmax)


@dataclass(frozen=True)
class Attention:
    """One attention computed in a forward pass.

    weights: (B, heads, N_queries, N_keys) probabilities (rows sum to 1), before
    any dropout; it is part of the autograd graph when gradients were enabled.
    For window attention (Swin) B counts windows: batch x windows per image.
    source: how the model computed it: ``scaled_dot_product_attention``,
    ``multi_head_attention`` (through nn.MultiheadAttention) or ``softmax`` (explicit).
    """

    weights: torch.Tensor
    source: str

    @property
    def heads(self) -> int:
        return int(self.weights.shape[1])

    @property
    def tokens(self) -> int:
        return int(self.weights.shape[-1])


def attention_weights(query: torch.Tensor, key: torch.Tensor, attn_mask: torch.Tensor | None = None,
                      is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
    """softmax(q k^T * scale + mask) with the semantics of F.scaled_dot_product_attention.

    query (..., L, E), key (..., S, E); a boolean mask keeps True positions, a float
    mask is added; is_causal keeps the lower triangle; scale defaults to 1/sqrt(E);
    enable_gqa repeats key heads to match the query heads. Returns (..., L, S).
    """
    if enable_gqa and key.dim() >= 3 and key.shape[-3] != query.shape[-3]:
        key = key.repeat_interleave(query.shape[-3] // key.shape[-3], dim=-3)
    factor = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if query.dim() >= 3 and query.shape[:-2] == key.shape[:-2]:
        # The scale applied inside the matrix product (baddbmm's alpha; beta=0 ignores the empty input):
        # one pass less over the (L, S) logits than matmul then multiply, about 15% of explicit attention.
        logits = torch.baddbmm(query.new_zeros(()), query.flatten(0, -3), key.flatten(0, -3).transpose(-2, -1),
                               beta=0, alpha=factor).unflatten(0, query.shape[:-2])
    else:
        logits = torch.matmul(query, key.transpose(-2, -1)) * factor
    length, source = query.shape[-2], key.shape[-2]
    if is_causal:
        keep = torch.ones(length, source, dtype=torch.bool, device=query.device).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask
    if logits.dtype in (torch.float16, torch.bfloat16):
        return torch.softmax(logits.float(), dim=-1).to(logits.dtype)
    return torch.softmax(logits, dim=-1)


def _four_d(weights: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, S) from what an attention call works on: (L, S), (B, L, S) or (B, heads, L, S)."""
    while weights.dim() < 4:
        weights = weights.unsqueeze(0 if weights.dim() < 3 else 1)
    return weights if weights.dim() == 4 else weights.flatten(0, weights.dim() - 4)


def _argument(args: tuple, kwargs: dict, position: int, name: str, default):
    return args[position] if len(args) > position else kwargs.get(name, default)


def _plain_multi_head(options: dict) -> bool:
    """Whether an F.multi_head_attention_forward call uses only the options _multi_head_attention covers."""
    return (options["bias_k"] is None and options["bias_v"] is None and not options["add_zero_attn"]
            and options["static_k"] is None and options["static_v"] is None)


def _as_additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """nn.MultiheadAttention's masks (True or -inf = masked out) as a float mask to add to the logits."""
    if mask is None or mask.is_floating_point():
        return None if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))


def _multi_head_attention(options: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """F.multi_head_attention_forward without bias_k/bias_v, add_zero_attn or static keys, written
    out so that its attention weights are a tensor of the graph: (output, (B, heads, L, S) weights)."""
    query, key, value = options["query"], options["key"], options["value"]
    self_attention = query is key and key is value
    unbatched = query.dim() == 2
    if unbatched:  # (L, E) -> (L, 1, E)
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
    length, batch, embed = query.shape
    heads = options["num_heads"]
    bias = options["in_proj_bias"]
    if self_attention and not options["use_separate_proj_weight"]:
        # One packed projection, as F.multi_head_attention_forward does for self-attention: a third of the
        # matmuls, bias adds and input copies of three separate ones (a ViT's input here is a transposed view).
        # (L, B, 3E) -> (3, B, heads, L, d) in one copy: q, k and v come out contiguous per head.
        packed = F.linear(query, options["in_proj_weight"], bias)
        packed = packed.reshape(length, batch, 3, heads, embed // heads).permute(2, 1, 3, 0, 4).contiguous()
        q, k, v = packed[0], packed[1], packed[2]
    else:
        if options["use_separate_proj_weight"]:
            projections = (options["q_proj_weight"], options["k_proj_weight"], options["v_proj_weight"])
        else:
            projections = options["in_proj_weight"].chunk(3)
        biases = (None, None, None) if bias is None else bias.chunk(3)
        q, k, v = (F.linear(x, w, b) for x, w, b in zip((query, key, value), projections, biases))
        # (L, B, E) -> (B, heads, L, d)
        q, k, v = (t.reshape(t.shape[0], batch * heads, -1).transpose(0, 1).reshape(batch, heads, t.shape[0], -1)
                   for t in (q, k, v))
    mask = _as_additive(options["attn_mask"], q.dtype)
    if mask is not None:
        mask = mask.reshape(batch, heads, length, -1) if mask.dim() == 3 else mask
    padding = _as_additive(options["key_padding_mask"], q.dtype)
    if padding is not None:
        padding = padding.reshape(batch, 1, 1, -1)
        mask = padding if mask is None else mask + padding
    weights = attention_weights(q, k, mask, is_causal=False, scale=None)
    dropout = options["dropout_p"] if options["training"] else 0.0
    attended = torch.matmul(F.dropout(weights, p=dropout) if dropout > 0 else weights, v)
    merged = attended.permute(2, 0, 1, 3).reshape(length, batch, embed)  # (L, B, E)
    output = F.linear(merged, options["out_proj_weight"], options["out_proj_bias"])
    return (output.squeeze(1) if unbatched else output), weights


class _AttentionMode(TorchFunctionMode):
    def __init__(self, explicit: bool) -> None:
        super().__init__()
        self.explicit = explicit
        self.attentions: list[Attention] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return self._scaled_dot_product(args, kwargs, FUSED)
        if func is F.multi_head_attention_forward:
            return self._multi_head(func, args, kwargs)
        if self.explicit and func in _SOFTMAX:
            return self._softmax(func, args, kwargs)
        if func in _OPAQUE:
            raise AttributionError(
                f"the model calls the fused kernel torch.{func.__name__}, whose attention weights cannot be read; "
                "it is normally skipped while attention is captured"
            )
        return func(*args, **kwargs)

    def _scaled_dot_product(self, args, kwargs, source: str) -> torch.Tensor:
        query, key, value = (_argument(args, kwargs, i, name, None) for i, name in enumerate(("query", "key", "value")))
        attn_mask = _argument(args, kwargs, 3, "attn_mask", None)
        dropout_p = _argument(args, kwargs, 4, "dropout_p", 0.0)
        is_causal = _argument(args, kwargs, 5, "is_causal", False)
        scale = _argument(args, kwargs, 6, "scale", None)
        enable_gqa = _argument(args, kwargs, 7, "enable_gqa", False)
        weights = attention_weights(query, key, attn_mask, is_causal, scale, enable_gqa)
        self.attentions.append(Attention(_four_d(weights), source))
        if enable_gqa and value.dim() >= 3 and value.shape[-3] != query.shape[-3]:
            value = value.repeat_interleave(query.shape[-3] // value.shape[-3], dim=-3)
        applied = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
        return torch.matmul(applied, value)

    def _multi_head(self, func, args, kwargs):
        bound = inspect.signature(func).bind(*args, **kwargs)
        bound.apply_defaults()
        options = bound.arguments
        need_weights, average = options["need_weights"], options["average_attn_weights"]
        unbatched = options["query"].dim() == 2
        if _plain_multi_head(options):
            output, weights = _multi_head_attention(options)
            self.attentions.append(Attention(weights, MULTI_HEAD))
            weights = weights[0] if unbatched else weights
        else:
            # Extra keys (bias_k, add_zero_attn, static keys): let it compute the per-head weights
            # itself. Its body runs while this mode is off and returns them as a view made after
            # use, so no gradient reaches them: they are recorded detached.
            options["need_weights"], options["average_attn_weights"] = True, False
            output, weights = func(*bound.args, **bound.kwargs)
            self.attentions.append(Attention((weights.unsqueeze(0) if unbatched else weights).detach(), MULTI_HEAD))
        if not need_weights:
            return output, None
        return output, weights.mean(dim=-3) if average else weights

    def _softmax(self, func, args, kwargs):
        result = func(*args, **kwargs)
        dim = _argument(args, kwargs, 1, "dim", None)
        if (isinstance(result, torch.Tensor) and result.dim() == 4 and dim in (-1, 3)
                and result.shape[-1] == result.shape[-2]):
            self.attentions.append(Attention(result, EXPLICIT))
        return result


@contextmanager
def captured_attention(model: nn.Module, explicit: bool = True) -> Iterator[list[Attention]]:
    """Record every attention computed by the forward passes run inside the block, in order.

    Yields a list that fills with :class:`Attention` records (one per attention
    call: a ViT-B gives 12 per forward pass). The model's outputs are those it
    gives outside the block (to float rounding); the model itself is not changed.
    Run the backward after the forward, inside or outside the block, to get
    gradients with respect to ``attention.weights``. ``explicit=False`` records
    only attention computed by a fused call (no softmax of 4-D tensors).
    A TorchScript model cannot be seen into and raises AttributionError.
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise AttributionError("attention cannot be captured inside a TorchScript model; load it as an nn.Module "
                               "(--model PATH --arch ... with a state_dict)")
    mode = _AttentionMode(explicit)
    with mode:  # TorchFunctionMode.__exit__ pops the mode even when the forward raises
        yield mode.attentions


def global_attention(attentions: list[Attention], batch: int, method: str = "this method") -> list[torch.Tensor]:
    """The weights of captured self-attention over one token sequence per input, layer by layer.

    Each is (batch, heads, N, N) with the same N in every layer. Raises
    AttributionError with a one-line reason for what `method` cannot use: no
    attention at all (a convnet), window attention (Swin: each window is its own
    small sequence, so the windows form no global token graph), or attention whose
    token count changes between layers or differs between queries and keys
    (token pooling, cross-attention).
    """
    if not attentions:
        raise AttributionError(
            f"{method} needs a transformer: the model computed no attention in its forward pass "
            "(no scaled_dot_product_attention, nn.MultiheadAttention or attention softmax)"
        )
    weights = [attention.weights for attention in attentions]
    first = weights[0]
    if any(w.shape[0] != batch and w.shape[0] % batch == 0 for w in weights):
        windows = first.shape[0] // batch if first.shape[0] % batch == 0 else "several"
        raise AttributionError(
            f"{method} needs global self-attention over the image's tokens; this model attends within local "
            f"windows ({windows} windows of {first.shape[-1]} tokens per image, as Swin does), which form no "
            "global token graph"
        )
    for number, w in enumerate(weights):
        if w.shape[0] != batch or w.shape[-1] != w.shape[-2] or w.shape[-1] != first.shape[-1]:
            raise AttributionError(
                f"{method} needs self-attention over the same tokens in every layer; attention {number} is "
                f"{tuple(w.shape)} after {tuple(first.shape)} (token pooling or cross-attention)"
            )
    return weights
