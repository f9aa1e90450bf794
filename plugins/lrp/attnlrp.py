"""The `attnlrp` plugin: AttnLRP (Achtibat et al., ICML 2024) for vision transformers.

    nnvis report images/ --model demo-vit --plugins attnlrp
    nnvis report images/ --model timm:deit_tiny_patch16_224 --plugins attnlrp --set attnlrp.attention=cp

LRP's machinery (a canonized copy, rules as autograd functions, one backward pass) with the rules
of transformer_rules.py for softmax attention, matrix products and LayerNorm, the identity rule
for GELU, and one rule (epsilon by default, as LXT) for every Linear layer and the patch embedding.
On the copy every parameter is a constant, so only what comes from the pixels carries relevance:
the class token's and the position embedding's shares are lost, like a bias's.

>>> from nnvis_plugins.lrp import attnlrp
>>> maps = attnlrp.attribute(vit, images, target=3)          # (N, C, H, W), signed
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from nnvis_core import Param, hookimpl
from nnvis_core.toolkit import (
    FAITHFULNESS_STEPS,
    TARGET,
    AttributionError,
    AttributionPlugin,
    Explanation,
    Target,
    check_target_count,
    reduce_param,
)
from nnvis_core.toolkit.attention import captured_attention
from nnvis_plugins.lrp.canonize import canonical_copy
from nnvis_plugins.lrp.layers import is_ruled, needs_proportional_rule
from nnvis_plugins.lrp.propagate import give_rule, relevance_pass, watched_forward
from nnvis_plugins.lrp.rules import make_rule, proportional
from nnvis_plugins.lrp.transformer_rules import Norm, layer_norm
from nnvis_plugins.lrp.transformer_watch import TransformerWatch, check_supported

ATTENTION_RULES = {"attnlrp": "AttnLRP's softmax and bilinear rules", "cp": "CP-LRP, attention weights held"}
LINEAR_RULES = ("epsilon", "gamma", "z-plus", "alpha2-beta1", "alpha1-beta0", "flat", "w-square")


def attribute(model: nn.Module, inputs: torch.Tensor, target: Target, attention: str = "attnlrp",
              linear: str = "epsilon", epsilon: float = 1e-6, gamma: float = 0.25,
              stabilizer: float = 1e-8) -> torch.Tensor:
    """(N, C, H, W) AttnLRP relevance of each input value for the target logit; signed.

    attention: "attnlrp" (the paper's softmax and bilinear rules) or "cp" (CP-LRP: the attention
    weights held constant, all relevance through the values, conservative); linear: the rule of
    every Linear and Conv layer (rules.py); epsilon: that of the epsilon rule and the LayerNorm rule;
    gamma: the gamma rule's; stabilizer: the epsilon of the rules for sums, means and matrix products.
    Epsilon 1e-6 and stabilizer 1e-8 are LXT's defaults. The model is never changed: AttnLRP runs on a
    copy (canonize.py).
    """
    if attention not in ATTENTION_RULES or linear not in LINEAR_RULES:
        raise AttributionError(f"AttnLRP: attention must be one of {', '.join(ATTENTION_RULES)} and linear one of "
                               f"{', '.join(LINEAR_RULES)}, got {attention!r} and {linear!r}")
    check_target_count(target, inputs.shape[0])
    canonical = canonical_copy(model, inputs[:1].detach())
    check_supported(canonical.calls)
    rule = make_rule(linear, epsilon, gamma)
    for _, module in canonical.calls:
        if is_ruled(module):
            give_rule(module, rule)
        elif isinstance(module, nn.LayerNorm):  # whatever its forward calls (timm's fast norm included)
            module.forward = functools.partial(_layer_norm_forward, module, epsilon)
        elif needs_proportional_rule(module):
            give_rule(module, proportional)
    watch = functools.partial(TransformerWatch, linear_rule=rule, held=attention == "cp", epsilon=epsilon,
                              stabilizer=stabilizer)
    return relevance_pass(watched_forward(canonical.model, watch), inputs, target, method="AttnLRP")


def _layer_norm_forward(module: nn.LayerNorm, epsilon: float, x: torch.Tensor) -> torch.Tensor:
    if not torch.is_grad_enabled():
        return type(module).forward(module, x)
    shape = tuple(module.normalized_shape)
    if tuple(x.shape[-len(shape):]) != shape:  # timm's LayerNorm2d: channels of a map, its forward permutes
        raise AttributionError(f"AttnLRP: no rule for {type(module).__name__} on an input of shape {tuple(x.shape)}: "
                               f"it normalizes over {shape}, not the input's trailing dimensions, and the LayerNorm "
                               "rule is written for those")
    return layer_norm(x, Norm.of(module), epsilon)


class AttnLRP(AttributionPlugin):
    name = "attnlrp"
    title = "AttnLRP"
    description = (
        "Achtibat et al. (2024): layer-wise relevance propagation through a vision transformer. The target logit "
        "is handed down layer by layer: epsilon rule on Linear layers and the patch embedding, identity rule on "
        "GELU, LayerNorm's scaling held constant, half of a matrix product's relevance to each factor, and the "
        "softmax rule of the paper on attention (or CP-LRP: attention weights held constant). Signed: red supports "
        "the class. Equal to LXT's rules (docs/lrp.md)."
    )
    label = "relevance"
    params = (
        TARGET,
        Param("attention", str, "attnlrp", "attnlrp: the paper's softmax and bilinear rules; cp: attention weights "
              "held constant (CP-LRP, conservative)", choices=tuple(ATTENTION_RULES)),
        Param("linear", str, "epsilon", "the rule of every Linear layer and the patch embedding",
              choices=LINEAR_RULES),
        Param("epsilon", float, 1e-6, "the epsilon rule's stabilizer (Linear and LayerNorm)", minimum=0.0),
        Param("gamma", float, 0.25, "the gamma rule's favour to positive contributions (linear=gamma)",
              minimum=0.0),
        reduce_param("sum"),
        FAITHFULNESS_STEPS,
    )

    def applies_to(self, ctx) -> str | None:
        size = ctx.model.preprocess.side
        probe = torch.zeros(1, 3, size, size, device=ctx.device)
        try:
            with torch.no_grad(), captured_attention(ctx.module) as attentions:
                ctx.module(probe)
        except AttributionError as error:
            return f"attnlrp: {error}"
        if not attentions:
            return "attnlrp needs a transformer: the model computed no attention (use lrp for convnets)"
        return None

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        relevance = attribute(ctx.module, inputs, target, attention=params["attention"], linear=params["linear"],
                              epsilon=params["epsilon"], gamma=params["gamma"])
        caption = (f"{ATTENTION_RULES[params['attention']]}, linear {params['linear']}; "
                   f"relevance sums to {float(relevance.sum()):.3g}")
        return Explanation(relevance[0], caption)


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(AttnLRP())
