"""Transformer attribution (Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability for
Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV): attention weighted by its gradient
towards a class, accumulated through the layers with the residual path.

With A_l the (heads, T, T) attention of layer l and dA_l = d score / d A_l:

    R = I
    for l = 1 .. L:    Abar_l = mean over heads of relu(dA_l * A_l)
                       R = R + Abar_l @ R

The map is the class token's row of R over the patch tokens (the mean row when
the model has no class token), on the patch grid, upsampled to the input.
Unlike rollout it depends on the class: the gradient picks the heads and
positions that raise the target score.

>>> from nnvis_plugins.transformer import relevance
>>> maps = relevance.attribute(vit, images, target=3)      # (N, 1, H, W)
"""

from __future__ import annotations

import torch
from torch import nn

from nnvis_core import hookimpl
from nnvis_core.toolkit import (
    FAITHFULNESS_STEPS,
    TARGET,
    AttributionError,
    Explanation,
    Target,
    target_scores,
)
from nnvis_core.toolkit.attention import captured_attention, global_attention
from nnvis_plugins.transformer.tokens import (
    TransformerMethod,
    layer_span,
    layout_for,
    patch_maps,
    query_name,
    query_row,
)

NAME = "transformer_attribution"


def attention_and_gradients(model: nn.Module, inputs: torch.Tensor, target: Target
                            ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, the (N, heads, T, T) attention and the gradient of the target score with respect to it."""
    x = inputs.detach().clone().requires_grad_(True)  # so the graph exists even with frozen parameters
    with torch.enable_grad():
        with captured_attention(model) as attentions:
            output = model(x)
        weights = global_attention(attentions, inputs.shape[0], NAME)
        if not all(w.requires_grad for w in weights):
            raise AttributionError(f"{NAME} needs gradients with respect to the attention weights, which this "
                                   "model's attention does not give (nn.MultiheadAttention with bias_k/bias_v, "
                                   "add_zero_attn or static keys)")
        grads = torch.autograd.grad(target_scores(output, target).sum(), weights, allow_unused=True)
    grads = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads)]
    return [w.detach() for w in weights], list(grads)


def relevance_matrix(weights: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """(N, T, T) relevance R from per-layer attention and gradients, first layer first."""
    first = weights[0]
    relevance = torch.eye(first.shape[-1], dtype=torch.float64, device=first.device).expand(
        first.shape[0], -1, -1).clone()
    for attention, grad in zip(weights, grads):
        weighted = (grad.double() * attention.double()).clamp(min=0).mean(dim=1)
        relevance = relevance + weighted @ relevance
    return relevance


def propagated(relevance: torch.Tensor) -> torch.Tensor:
    """R - I: the relevance that reached each token through attention, without the identity it starts from.

    The class token's row over the patches never holds the identity's 1, so
    nothing changes there; read from patch rows (a model without a class token)
    the identity would add the same 1/patches to every patch and, with weak
    gradients, bury the map under a constant.
    """
    eye = torch.eye(relevance.shape[-1], dtype=relevance.dtype, device=relevance.device)
    return relevance - eye


def attribute(model: nn.Module, inputs: torch.Tensor, target: Target, upsample: bool = True) -> torch.Tensor:
    """(N, 1, H, W) transformer attribution of `target` for `inputs`; the patch grid when upsample=False."""
    weights, grads = attention_and_gradients(model, inputs, target)
    layout = layout_for(model, inputs, weights[0].shape[-1], NAME)
    rows = query_row(propagated(relevance_matrix(weights, grads)), layout, model)
    return patch_maps(rows[:, None], layout, tuple(inputs.shape[-2:]) if upsample else None).to(inputs.dtype)


class TransformerAttribution(TransformerMethod):
    name = NAME
    title = "Transformer attribution"
    description = (
        "Chefer, Gur & Wolf (2021): each layer's attention weighted by the gradient of the class score, "
        "rectified and averaged over heads, accumulated through the layers with the residual path; the "
        "class token's row over the patches, upsampled to the image. Class-specific. Needs a vision "
        "transformer with global attention."
    )
    label = "relevance"
    params = (TARGET, FAITHFULNESS_STEPS)

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        weights, grads = attention_and_gradients(ctx.module, inputs, target)
        layout = layout_for(ctx.module, inputs, weights[0].shape[-1], NAME)
        rows = query_row(propagated(relevance_matrix(weights, grads)), layout, ctx.module)
        heat = patch_maps(rows[:, None], layout, tuple(inputs.shape[-2:]))
        caption = (f"gradient-weighted attention of {layer_span(len(weights))}; "
                   f"{query_name(layout, ctx.module)}; {layout.describe()}")
        if not any(bool(grad.any()) for grad in grads):
            caption += "; the class score does not depend on the attention here (every gradient is zero)"
        return Explanation(heat[0, 0].float(), caption)


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(TransformerAttribution())
