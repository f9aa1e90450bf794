"""What the transformer methods share: the attention of one forward pass, and token rows as maps."""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn

from nnvis_core.models.outputs import Layout, LayoutError, token_layout
from nnvis_core.toolkit import AttributionError, AttributionPlugin
from nnvis_core.toolkit.attention import Attention, captured_attention, global_attention


def forward_attention(model: nn.Module, inputs: torch.Tensor, method: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The model output and the (N, heads, T, T) self-attention of every layer, without gradients."""
    with torch.no_grad(), captured_attention(model) as attentions:
        output = model(inputs)
    return output, global_attention(attentions, inputs.shape[0], method)


class TransformerMethod(AttributionPlugin):
    """What the three methods share: they apply only to models with global self-attention
    over one token sequence (checked once per run on a blank image, see applies_to)."""

    def applies_to(self, ctx) -> str | None:
        size = ctx.model.preprocess.side
        probe = torch.zeros(1, 3, size, size, device=ctx.device)
        try:
            weights = global_attention(probe_attention(ctx.module, probe), 1, self.name)
            layout_for(ctx.module, probe, weights[0].shape[-1], self.name)
        except AttributionError as error:
            return str(error)
        return None


# model -> (probe size, its attention): the three methods share one probe pass per run.
_PROBES: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], list[Attention]]]" = weakref.WeakKeyDictionary()


def probe_attention(model: nn.Module, probe: torch.Tensor) -> list[Attention]:
    """The attention a blank probe image raises in the model, computed once per model and size."""
    cached = _PROBES.get(model)
    if cached is None or cached[0] != tuple(probe.shape):
        with torch.no_grad(), captured_attention(model) as attentions:
            model(probe)
        cached = _PROBES[model] = (tuple(probe.shape), list(attentions))
    return cached[1]


def layout_for(model: nn.Module, inputs: torch.Tensor, tokens: int, method: str) -> Layout:
    """Prefix count and patch grid of `tokens` tokens for this input size, or a one-line refusal.

    Only a patch embedding's grid, not one a model states for its conv stages (LeViT, EfficientFormer):
    behind those stages a softmax of square shape need not be attention between the tokens (MobileViTv2's
    separable attention scores are (P, N), square at 64 px), and nothing ties such tokens to patches."""
    try:
        return token_layout(model, tuple(inputs.shape[-2:]), tokens, stated=False)
    except LayoutError as error:
        raise AttributionError(f"{method}: {error}") from None


def has_class_token(model: nn.Module, layout: Layout) -> bool:
    """Whether the head reads a class token (the first prefix token).

    timm models say so: ``cls_token`` None, or a ``global_pool`` that pools the
    patches ('avg', 'map', ...), means the prefix tokens are registers only (or
    are not read), and the first of them is no class token.
    """
    if not layout.prefix or getattr(model, "cls_token", True) is None:
        return False
    pool = getattr(model, "global_pool", "token")
    return not isinstance(pool, str) or pool in ("token", "")


def query_row(matrix: torch.Tensor, layout: Layout, model: nn.Module) -> torch.Tensor:
    """(..., T) from a (..., T, T) token matrix: the class token's row when the head reads one,
    else the mean over the patch tokens' rows (what a pooled head reads)."""
    if has_class_token(model, layout):
        return matrix[..., 0, :]
    return matrix[..., layout.prefix:, :].mean(dim=-2)


def query_name(layout: Layout, model: nn.Module) -> str:
    if has_class_token(model, layout):
        return "the class token's row"
    return "the mean over the patch tokens' rows (the head reads no class token)"


def patch_maps(rows: torch.Tensor, layout: Layout, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(N, K, h, w) patch maps from (N, K, T) rows over tokens (prefix tokens dropped), upsampled
    bilinearly to `size` when given."""
    maps = layout.to_map(rows.transpose(1, 2))
    if size is None or tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def layer_span(count: int) -> str:
    """'12 attention layers (0-11)' for a caption."""
    return f"{count} attention layer{'s' * (count != 1)} ({'0' if count == 1 else f'0-{count - 1}'})"
