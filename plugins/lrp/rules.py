"""The LRP rules: how one layer hands the relevance of its outputs down to its inputs.

A rule is a function ``(layer, x, relevance) -> relevance of x``: ``x`` is what the layer
received in the forward pass, ``relevance`` has the shape of its output. For a layer
``z_k = sum_j w_kj x_j + b_k`` (Montavon et al. 2019, "Layer-Wise Relevance Propagation:
An Overview"; x+ = max(x, 0), x- = min(x, 0), w+ = max(w, 0), w- = min(w, 0)):

- epsilon:       R_j = x_j sum_k w_kj R_k / (z_k + eps sign z_k)
- z-plus:        R_j = sum_k (x+_j w+_kj + x-_j w-_kj) R_k / (sum_i x+_i w+_ki + x-_i w-_ki + b+_k)
- alpha-beta:    alpha * (positive contributions, normalized by their sum, as z-plus)
                 - beta * (negative contributions x+ w- + x- w+, normalized by their sum with b-)
- gamma:         where z_k > 0: contributions with w + gamma w+ (on x+) and w + gamma w- (on x-),
                 where z_k < 0: the mirror image; each normalized by its own sum
- flat:          R_j = sum_k R_k / (number of inputs of k): every input of a unit counts the same
- w-square:      R_j = sum_k w_kj^2 R_k / sum_i w_ki^2
- z-box:         R_j = sum_k (x_j w_kj - l_j w+_kj - h_j w-_kj) R_k / sum_i (same): inputs in a box [l, h]

Every denominator is pushed away from zero (:func:`stabilize`), and every sum is an autograd
vector-Jacobian product of the layer's own operation with modified weights, so that one
rule serves Linear and Conv1d/2d/3d with any stride, padding, dilation or groups. The
arithmetic follows Zennit 0.5.1 term by term (the same operations in the same order), which
is what lets the maps agree with Zennit's to float rounding (docs/lrp.md).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Rule = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

# Zennit's default: what keeps every rule's denominators away from zero except epsilon's own.
STABILIZER = 1e-6
RULE_NAMES = ("epsilon", "gamma", "alpha2-beta1", "alpha1-beta0", "z-plus", "flat", "w-square", "z-box")


def stabilize(z: torch.Tensor, epsilon: float = STABILIZER) -> torch.Tensor:
    """``z`` moved away from zero by ``epsilon`` on its own side (zero counts as positive)."""
    sign = (z == 0).to(z) + z.sign()
    return z + sign * epsilon


def plain_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's own computation: on the canonical copy its instance ``forward`` is the rule's wrapper."""
    return type(layer).forward(layer, x)


def affine(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The operation of a Linear or Conv layer with another weight and bias."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, bias)
    return layer._conv_forward(x, weight, bias)


def _leaf(values: torch.Tensor) -> torch.Tensor:
    return values.detach().requires_grad_(True)


def _pullback(outputs: list[torch.Tensor], inputs: list[torch.Tensor],
              shares: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """For each (output, input, share): sum_k w_kj share_k, the transposed layer applied to the share."""
    return torch.autograd.grad(outputs, inputs, shares)


def _weight(layer: nn.Module) -> torch.Tensor:
    return layer.weight.detach()  # the copy shares the model's parameters: no graph, no gradient for them


def _bias(layer: nn.Module, change: Callable[[torch.Tensor], torch.Tensor] = lambda b: b) -> torch.Tensor | None:
    return None if layer.bias is None else change(layer.bias.detach())


def _positive(values: torch.Tensor) -> torch.Tensor:
    return values.clamp(min=0)


def _negative(values: torch.Tensor) -> torch.Tensor:
    return values.clamp(max=0)


def epsilon_rule(epsilon: float) -> Rule:
    """LRP-epsilon (Bach et al. 2015); epsilon -> 0 is LRP-0. Any layer whose output is linear in its
    input (an affine map) can take it: pooling and sums get it with the stabilizer as epsilon."""
    def relevance(layer: nn.Module, x: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        x = _leaf(x)
        z = plain_forward(layer, x)
        (pulled,) = _pullback([z], [x], [upper / stabilize(z, epsilon)])
        return x * pulled
    return relevance


def proportional(layer: nn.Module, x: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Each input's share of the output, for average pooling and unmerged BatchNorm (Zennit's Norm)."""
    return epsilon_rule(STABILIZER)(layer, x, upper)


def z_plus(layer: nn.Module, x: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """LRP-z+ (Montavon et al. 2017): only the contributions that raise the output, x+ w+ and x- w-."""
    weight = _weight(layer)
    xp, xn = _leaf(_positive(x)), _leaf(_negative(x))
    zp = affine(layer, xp, _positive(weight), _bias(layer, _positive))
    zn = affine(layer, xn, _negative(weight), None)
    share = upper / stabilize(zp + zn)
    gp, gn = _pullback([zp, zn], [xp, xn], [share, share])
    return xp * gp + xn * gn


def alpha_beta(alpha: float, beta: float) -> Rule:
    """LRP-alpha-beta (Bach et al. 2015): positive contributions weighted alpha, negative ones beta,
    each normalized by their own sum; alpha - beta = 1 keeps the total."""
    if alpha < 0 or beta < 0 or alpha - beta != 1:
        raise ValueError(f"alpha-beta needs alpha, beta >= 0 and alpha - beta = 1, got {alpha}, {beta}")

    def relevance(layer: nn.Module, x: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        weight = _weight(layer)
        up, down = _positive(weight), _negative(weight)
        xp, xn = _positive(x), _negative(x)
        inputs = [_leaf(xp), _leaf(xn), _leaf(xp), _leaf(xn)]
        outputs = [affine(layer, inputs[0], up, _bias(layer, _positive)), affine(layer, inputs[1], down, None),
                   affine(layer, inputs[2], down, _bias(layer, _negative)), affine(layer, inputs[3], up, None)]
        raising = upper / stabilize(outputs[0] + outputs[1])
        lowering = upper / stabilize(outputs[2] + outputs[3])
        g = _pullback(outputs, inputs, [raising, raising, lowering, lowering])
        return (alpha * (inputs[0] * g[0] + inputs[1] * g[1])
                - beta * (inputs[2] * g[2] + inputs[3] * g[3]))
    return relevance


def gamma_rule(gamma: float) -> Rule:
    """LRP-gamma (Montavon et al. 2019), generalized to inputs of both signs as Zennit does: where the
    output is positive, the contributions that raise it are favoured by gamma; where it is negative,
    those that lower it."""
    def relevance(layer: nn.Module, x: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        weight = _weight(layer)
        raised = weight + gamma * _positive(weight)
        lowered = weight + gamma * _negative(weight)
        xp, xn = _positive(x), _negative(x)
        inputs = [_leaf(xp), _leaf(xn), _leaf(xp), _leaf(xn)]
        outputs = [affine(layer, inputs[0], raised, _bias(layer, lambda b: b + gamma * _positive(b))),
                   affine(layer, inputs[1], lowered, None),
                   affine(layer, inputs[2], lowered, _bias(layer, lambda b: b + gamma * _negative(b))),
                   affine(layer, inputs[3], raised, None)]
        z = affine(layer, x, weight, _bias(layer))
        where_positive = (z > 0) * upper / stabilize(outputs[0] + outputs[1])
        where_negative = (z < 0) * upper / stabilize(outputs[2] + outputs[3])
        g = _pullback(outputs, inputs, [where_positive, where_positive, where_negative, where_negative])
        return inputs[0] * g[0] + inputs[1] * g[1] + inputs[2] * g[2] + inputs[3] * g[3]
    return relevance


def flat(layer: nn.Module, x: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """LRP-flat (Lapuschkin et al. 2019): w-square with every weight 1, so each input of a unit gets
    the same share whatever its value or weight."""
    ones = _leaf(torch.ones_like(x))
    z = affine(layer, ones, torch.ones_like(_weight(layer)), None)
    (pulled,) = _pullback([z], [ones], [upper / stabilize(z)])
    return pulled


def w_square(layer: nn.Module, x: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """LRP-w^2 (Montavon et al. 2017): shares by squared weight, whatever the input; for a first layer
    whose inputs are unbounded."""
    ones = _leaf(torch.ones_like(x))
    z = affine(layer, ones, _weight(layer) ** 2, None)
    (pulled,) = _pullback([z], [ones], [upper / stabilize(z)])
    return pulled


def z_box(low: torch.Tensor, high: torch.Tensor) -> Rule:
    """LRP-z^B (Montavon et al. 2017) for the first layer, whose inputs lie in [low, high] (the
    normalized black and white pixels, per channel)."""
    def relevance(layer: nn.Module, x: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        weight = _weight(layer)
        inputs = [_leaf(x), _leaf(_bound(low, x)), _leaf(_bound(high, x))]
        outputs = [affine(layer, inputs[0], weight, _bias(layer)),
                   affine(layer, inputs[1], _positive(weight), _bias(layer, _positive)),
                   affine(layer, inputs[2], _negative(weight), _bias(layer, _negative))]
        share = upper / stabilize(outputs[0] - (outputs[1] + outputs[2]))
        g = _pullback(outputs, inputs, [share, share, share])
        return inputs[0] * g[0] - (inputs[1] * g[1] + inputs[2] * g[2])
    return relevance


def _bound(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    bound = torch.as_tensor(value).to(x)
    try:
        return bound.expand_as(x)
    except RuntimeError:
        raise ValueError(f"z-box bounds of shape {tuple(bound.shape)} do not fit the first layer's input "
                         f"{tuple(x.shape)}") from None


def make_rule(name: str, epsilon: float = 1e-6, gamma: float = 0.25,
              bounds: tuple[torch.Tensor, torch.Tensor] | None = None) -> Rule:
    """The rule called `name` (one of RULE_NAMES) with its parameters."""
    if name == "z-box":
        if bounds is None:
            raise ValueError("the z-box rule needs bounds=(low, high): the normalized values of black and white "
                             "pixels (nnvis_plugins.lrp.box_bounds(mean, std))")
        return z_box(*bounds)
    made: dict[str, Callable[[], Rule]] = {
        "epsilon": lambda: epsilon_rule(epsilon), "gamma": lambda: gamma_rule(gamma),
        "alpha2-beta1": lambda: alpha_beta(2, 1), "alpha1-beta0": lambda: alpha_beta(1, 0),
        "z-plus": lambda: z_plus, "flat": lambda: flat, "w-square": lambda: w_square,
    }
    if name not in made:
        raise ValueError(f"unknown LRP rule {name!r}: use one of {', '.join(RULE_NAMES)}")
    return made[name]()
