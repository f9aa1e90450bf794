"""The reference for the AttnLRP parity test: a timm ViT's forward written out with LXT 2.1's explicit rules.

LXT's own entry points for a whole model do not run here: ``lxt.efficient`` imports every model
family it patches at import time, and its BERT module needs helpers transformers 5 removed;
``lxt.explicit.core`` traces Hugging Face models only. So the forward of timm's VisionTransformer
(class token, blocks of pre-norm attention and MLP, final norm, head on the class token) is written
here with LXT's functional rules, each where the model computes that step:

- patch embedding (Conv2d) and every Linear: ``lxt.explicit.rules.epsilon_lrp`` / ``lf.linear_epsilon``;
- LayerNorm: ``lf.layer_norm`` (standard deviation held, epsilon on the rest);
- ``q * scale``: ``lf.mul2`` with a constant (all relevance to q);
- ``q @ k^T`` and ``A @ v``: ``lf.matmul`` (epsilon, then half to each factor);
- softmax: ``lf.softmax``; GELU: ``lxt.explicit.rules.identity``;
- residual sums and the position embedding: ``lf.add2``.

``held=True`` is CP-LRP as LXT's ViT patch does it (no relevance through q and k): the attention
weights are detached and ``A @ v`` gets ``epsilon_lrp``, the whole relevance to v.
Parameters are detached, as on nnvis's copy: only the input carries relevance.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import lxt.explicit.functional as lf
import lxt.explicit.rules as lxt_rules
import torch
import torch.nn.functional as F
from lxt.explicit.rules import epsilon_lrp, identity
from torch import nn

LINEAR_EPSILON = 1e-6  # lf.linear_epsilon's default, and nnvis's epsilon rule's
PRODUCT_EPSILON = 1e-8  # lf.matmul's and lf.add2's default, and nnvis's stabilizer for products and sums


@contextmanager
def signed_stabilizer() -> Iterator[None]:
    """LXT with nnvis's (and Zennit's) stabilizer: z moved away from zero by epsilon on its own side, zero
    counting as positive, where LXT adds epsilon whatever the sign (z + eps)."""
    def signed(values: torch.Tensor, epsilon: float = 1e-6, inplace: bool = False) -> torch.Tensor:
        return values + ((values >= 0).to(values) * 2 - 1) * epsilon
    saved = lf._stabilize, lxt_rules._stabilize
    lf._stabilize = lxt_rules._stabilize = signed
    try:
        yield
    finally:
        lf._stabilize, lxt_rules._stabilize = saved


def _linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    return lf.linear_epsilon(x, layer.weight.detach(), _bias(layer.bias), epsilon=LINEAR_EPSILON)


def _norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    return lf.layer_norm(x, norm.weight.detach(), _bias(norm.bias), norm.eps)


def _bias(bias: torch.Tensor | None) -> torch.Tensor | None:
    return None if bias is None else bias.detach()


def _attention(block: nn.Module, x: torch.Tensor, held: bool, epsilon: float) -> torch.Tensor:
    attention = block.attn
    batch, tokens, width = x.shape
    qkv = _linear(x, attention.qkv).reshape(batch, tokens, 3, attention.num_heads, attention.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    q = lf.mul2(q, attention.scale)
    if held:
        weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1).detach()
        attended = epsilon_lrp(torch.matmul, epsilon, weights, v)
    else:
        scores = lf.matmul(q, k.transpose(-2, -1), epsilon=epsilon)
        attended = lf.matmul(lf.softmax(scores, -1), v, epsilon=epsilon)
    return _linear(attended.transpose(1, 2).reshape(batch, tokens, width), attention.proj)


def _mlp(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _linear(identity(F.gelu, _linear(x, block.mlp.fc1)), block.mlp.fc2)


def forward(model: nn.Module, images: torch.Tensor, held: bool = False, epsilon: float = PRODUCT_EPSILON
            ) -> torch.Tensor:
    """The logits of a timm VisionTransformer with a class token, through LXT's rules; epsilon: that of the
    matrix products and sums."""
    proj = model.patch_embed.proj
    tokens = epsilon_lrp(lambda x: F.conv2d(x, proj.weight.detach(), _bias(proj.bias), proj.stride), LINEAR_EPSILON,
                         images).flatten(2).transpose(1, 2)
    prefix = model.cls_token.detach().expand(images.shape[0], -1, -1)
    x = lf.add2(torch.cat([prefix, tokens], dim=1), model.pos_embed.detach(), epsilon=epsilon)
    for block in model.blocks:
        x = lf.add2(x, _attention(block, _norm(x, block.norm1), held, epsilon), epsilon=epsilon)
        x = lf.add2(x, _mlp(block, _norm(x, block.norm2)), epsilon=epsilon)
    return _linear(_norm(x, model.norm)[:, 0], model.head)


def attribute(model: nn.Module, images: torch.Tensor, target: int, held: bool = False,
              epsilon: float = PRODUCT_EPSILON) -> torch.Tensor:
    """LXT's relevance at the pixels, the output seeded with the target logit (as nnvis does)."""
    x = images.detach().clone().requires_grad_(True)
    logits = forward(model, x, held, epsilon)
    seed = torch.zeros_like(logits)
    seed[:, target] = logits[:, target].detach()
    (relevance,) = torch.autograd.grad(logits, x, seed)
    return relevance
