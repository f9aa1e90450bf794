"""Edge-popup (Ramanujan et al., CVPR 2020): a subnetwork of frozen weights, chosen by learned scores.

Every conv and linear weight gets a score. The forward pass uses the weights whose
|score| is among the top k of their layer and zero for the rest; the backward pass
treats that selection as the identity (straight-through), so a score's gradient is
the loss's gradient with respect to its masked weight, times the weight. The
weights themselves never change; neither do the norm layers' affine parameters,
held at the identity as in the paper (their running statistics do update).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

INITS = ("kaiming_normal", "signed_constant", "loaded")
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)


class _TopK(torch.autograd.Function):
    """Forward: 1 where a magnitude is among the `keep` share of its tensor, else 0. Backward: identity."""

    @staticmethod
    def forward(ctx, magnitudes: torch.Tensor, keep: float) -> torch.Tensor:
        flat = magnitudes.detach().flatten()
        count = kept_count(flat.numel(), keep)
        if count == flat.numel():
            return torch.ones_like(magnitudes)
        # The count-th largest as a threshold: a selection in linear time, where topk sorts (scores are
        # continuous, so a tie that would keep one weight more has probability zero).
        threshold = flat.kthvalue(flat.numel() - count + 1).values
        return (magnitudes.detach() >= threshold).to(magnitudes.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def kept_count(total: int, keep: float) -> int:
    """How many of `total` weights a layer keeps at share `keep` (at least one)."""
    return max(1, min(total, round(keep * total)))


def top_k_mask(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """The layer's mask: its `keep` share of largest |score|. Straight-through to |score|, so a score's
    gradient carries its sign (the reference code selects on scores.abs() the same way)."""
    return _TopK.apply(scores.abs(), keep)


def prunable(model: nn.Module) -> list[str]:
    """The weights edge-popup chooses among: those of every Conv2d and Linear layer (the last included)."""
    return [f"{name}.weight" if name else "weight" for name, module in model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear))]


def _fan_in(weight: torch.Tensor) -> int:
    return int(weight[0].numel())


def frozen_copy(model: nn.Module, init: str, seed: int) -> nn.Module:
    """A copy of `model` with its conv and linear weights drawn by `init` from `seed` (He's scale for
    ReLU, sqrt(2 / fan_in): normal for kaiming_normal, plus or minus that constant with a random sign for
    signed_constant) or kept (loaded), their biases zero (the paper's layers have none) unless loaded,
    the norm layers' affine parameters at the identity, and nothing trainable."""
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    frozen = copy.deepcopy(model).cpu().float()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in frozen.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and init != "loaded":
                scale = math.sqrt(2 / _fan_in(module.weight))
                if init == "kaiming_normal":
                    drawn = torch.randn(module.weight.shape, generator=generator) * scale
                else:
                    signs = torch.randint(0, 2, module.weight.shape, generator=generator) * 2 - 1
                    drawn = signs.float() * scale
                module.weight.copy_(drawn)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, NORMS) and getattr(module, "weight", None) is not None:
                module.weight.fill_(1)
                module.bias.zero_()
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    return frozen


def initial_scores(frozen: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """One trainable score per prunable weight, drawn as the reference code draws them (Kaiming uniform
    with a = sqrt(5), PyTorch's default for a layer's weight)."""
    generator = torch.Generator().manual_seed(seed)
    scores = {}
    for name in prunable(frozen):
        weight = frozen.get_parameter(name)
        bound = 1 / math.sqrt(_fan_in(weight))  # kaiming_uniform_(a=sqrt(5)) gives this bound
        scores[name] = ((torch.rand(weight.shape, generator=generator) * 2 - 1) * bound).requires_grad_()
    return scores


def masked_weights(frozen: nn.Module, scores: dict[str, torch.Tensor], keep: float) -> dict[str, torch.Tensor]:
    """{weight name: weight x its layer's top-k mask}: what the subnetwork computes with."""
    return {name: frozen.get_parameter(name) * top_k_mask(score, keep) for name, score in scores.items()}


def forward(frozen: nn.Module, scores: dict[str, torch.Tensor], keep: float, images: torch.Tensor) -> torch.Tensor:
    return torch.func.functional_call(frozen, masked_weights(frozen, scores, keep), (images,))


def export(frozen: nn.Module, scores: dict[str, torch.Tensor], keep: float) -> nn.Module:
    """An ordinary module holding the subnetwork: each masked weight written into a copy of `frozen`."""
    subnetwork = copy.deepcopy(frozen)
    with torch.no_grad():
        for name, weight in masked_weights(frozen, scores, keep).items():
            subnetwork.get_parameter(name).copy_(weight)
    return subnetwork.eval()
