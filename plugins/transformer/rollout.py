"""Attention rollout (Abnar & Zuidema 2020): how much each patch token feeds the class token,
following attention through every layer and the residual connections around it.

Per layer l, with the heads fused (mean, max or min) into W_l (T x T):

    A_l = normalize_rows(W_l' + I)        W_l' = W_l with the lowest discard_ratio of each row's
                                          off-diagonal weights set to 0; I is the residual path
    rollout = A_L @ ... @ A_2 @ A_1

The map is the class token's row of ``rollout`` over the patch tokens (the mean
row when the model has no class token), on the patch grid, upsampled to the
input. It does not depend on any class: the same map explains every prediction.

>>> from nnvis_plugins.transformer import rollout
>>> maps = rollout.attribute(vit, images)          # (N, 1, H, W)
"""

from __future__ import annotations

import torch
from torch import nn

from nnvis_core import Param, hookimpl
from nnvis_core.toolkit import (
    FAITHFULNESS_STEPS,
    TARGET,
    Explanation,
)
from nnvis_plugins.transformer.tokens import (
    TransformerMethod,
    forward_attention,
    layer_span,
    layout_for,
    patch_maps,
    query_name,
    query_row,
)

HEAD_FUSIONS = ("mean", "max", "min")
NAME = "attention_rollout"


def fuse_heads(weights: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """(N, heads, T, T) -> (N, T, T): the mean, max or min over heads."""
    if head_fusion == "mean":
        return weights.mean(dim=1)
    if head_fusion == "max":
        return weights.amax(dim=1)
    if head_fusion == "min":
        return weights.amin(dim=1)
    raise ValueError(f"unknown head fusion {head_fusion!r}; use {', '.join(HEAD_FUSIONS)}")


def discard_lowest(fused: torch.Tensor, discard_ratio: float) -> torch.Tensor:
    """Zero the lowest `discard_ratio` share of each row's off-diagonal weights of (N, T, T).

    The diagonal (a token attending to itself) is kept, so that no row can lose all its
    weight, and rows are discarded within, so each query keeps its own strongest links.
    """
    tokens = fused.shape[-1]
    count = int(discard_ratio * (tokens - 1))
    if count <= 0:
        return fused
    diagonal = torch.eye(tokens, dtype=torch.bool, device=fused.device)
    ranked = fused.masked_fill(diagonal, float("inf"))
    lowest = ranked.topk(count, dim=-1, largest=False).indices
    return fused.scatter(-1, lowest, 0.0)


def rollout_matrix(weights: list[torch.Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0) -> torch.Tensor:
    """(N, T, T) joint attention from per-layer (N, heads, T, T) weights, first layer first."""
    joint = None
    for layer in weights:
        fused = discard_lowest(fuse_heads(layer.detach().double(), head_fusion), discard_ratio)
        step = fused + torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        step = step / step.sum(dim=-1, keepdim=True)
        joint = step if joint is None else step @ joint
    assert joint is not None, "no attention layers"
    return joint


def attribute(model: nn.Module, inputs: torch.Tensor, head_fusion: str = "mean", discard_ratio: float = 0.0,
              upsample: bool = True) -> torch.Tensor:
    """(N, 1, H, W) attention rollout for `inputs` (N, C, H, W); the patch grid when upsample=False."""
    _, weights = forward_attention(model, inputs, NAME)
    layout = layout_for(model, inputs, weights[0].shape[-1], NAME)
    rows = query_row(rollout_matrix(weights, head_fusion, discard_ratio), layout, model)
    maps = patch_maps(rows[:, None], layout, tuple(inputs.shape[-2:]) if upsample else None)
    return maps.to(inputs.dtype)


def _ratio(value: float) -> str | None:
    return None if 0.0 <= value < 1.0 else "must be at least 0 and below 1"


class AttentionRollout(TransformerMethod):
    name = NAME
    title = "Attention rollout"
    description = (
        "Abnar & Zuidema (2020): the attention of every layer, heads fused and the residual path added, "
        "multiplied through the network; the class token's row over the patches, upsampled to the image. "
        "Class-agnostic: the same map for every class. Needs a vision transformer with global attention."
    )
    label = "rolled-out attention"
    params = (
        TARGET,
        Param("head_fusion", str, "mean", "how a layer's heads become one matrix: mean, max or min",
              choices=HEAD_FUSIONS),
        Param("discard_ratio", float, 0.0, "share of each row's weakest attention weights set to 0 before "
              "rolling out (0 keeps all; the diagonal is always kept)", check=_ratio),
        FAITHFULNESS_STEPS,
    )

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        _, weights = forward_attention(ctx.module, inputs, NAME)
        layout = layout_for(ctx.module, inputs, weights[0].shape[-1], NAME)
        joint = rollout_matrix(weights, params["head_fusion"], params["discard_ratio"])
        heat = patch_maps(query_row(joint, layout, ctx.module)[:, None], layout, tuple(inputs.shape[-2:]))
        caption = (f"class-agnostic (the same map for every class); rollout of {layer_span(len(weights))}, "
                   f"heads fused by {params['head_fusion']}, {params['discard_ratio']:g} of weights discarded; "
                   f"{query_name(layout, ctx.module)}; {layout.describe()}")
        return Explanation(heat[0, 0].float(), caption)


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(AttentionRollout())
