"""One LRP pass: canonize a copy, give each layer its rule, run forward, send the relevance back.

The relevance put on the output is the explained quantity itself: the target logit, on the
target's entry (Zennit's Gradient attributor with ``attr_output = output * one_hot``; with a
plain one-hot Zennit's map is this one divided by the logit). For a callable target the
output relevance is ``output * d score / d output``, which is the score for any score linear
in the logits (a difference of two classes, say).

>>> from nnvis_plugins import lrp
>>> maps = lrp.attribute(model, images, target=3)                         # (N, C, H, W), signed
>>> maps = lrp.attribute(model, images, 3, composite="epsilon-gamma-box",
...                      bounds=lrp.box_bounds(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from nnvis_core.models.logits import logits_of
from nnvis_core.toolkit import AttributionError, Target, check_target_count, normalizer, target_scores
from nnvis_plugins.lrp import composites, layers
from nnvis_plugins.lrp.backward import Record, with_rule
from nnvis_plugins.lrp.canonize import Canonical, canonical_copy
from nnvis_plugins.lrp.functional import FunctionalWatch, watched
from nnvis_plugins.lrp.rules import Rule, make_rule, proportional


def box_bounds(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The z-box bounds for a model normalizing (pixel - mean) / std: the normalized values of
    pixel 0 and pixel 1 per channel, each shaped (1, C, 1, 1)."""
    normalize = normalizer(mean, std)
    channels = len(mean)
    return normalize(torch.zeros(1, channels, 1, 1)), normalize(torch.ones(1, channels, 1, 1))


def attribute(model: nn.Module, inputs: torch.Tensor, target: Target, composite: str = "epsilon-plus",
              rules: str = "", epsilon: float = 1e-6, gamma: float = 0.25,
              bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
              record: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """(N, C, H, W) relevance of each input value for the target logit; signed, summing to about the logit.

    composite: a preset of composites.COMPOSITES; rules: overrides such as "conv=gamma,first=flat";
    epsilon: the epsilon rule's; gamma: the gamma rule's; bounds: (low, high) for the z-box rule,
    the normalized black and white pixels (:func:`box_bounds`), needed by epsilon-gamma-box;
    record: filled with the relevance at the input of every layer a rule applies to (name -> tensor;
    for a layer run more than once, its last backward call).
    The model is never changed: LRP runs on a canonized copy of its modules (canonize.py).
    """
    try:
        plan = composites.composite(composite, rules)
    except ValueError as error:
        raise AttributionError(str(error)) from None
    check_target_count(target, inputs.shape[0])
    canonical = canonical_copy(model, inputs[:1].detach())  # the structure, read from one input
    layers.check_supported(canonical.calls)
    _install_rules(canonical, plan, epsilon, gamma, bounds, record)

    return relevance_pass(watched_forward(canonical.model), inputs, target)


def watched_forward(model: nn.Module, watch: Callable[..., TorchFunctionMode] = FunctionalWatch
                    ) -> Callable[[torch.Tensor], object]:
    """The canonical copy's forward inside `watch`, with its parameters and buffers as constants (on the
    copy only): only what comes from the input carries relevance."""
    constants = {name: tensor.detach() for name, tensor in (*model.named_parameters(), *model.named_buffers())}

    def forward(x: torch.Tensor) -> object:
        with watched(model, watch):
            return functional_call(model, constants, (x,))
    return forward


def relevance_pass(forward: Callable[[torch.Tensor], object], inputs: torch.Tensor, target: Target,
                   method: str = "LRP") -> torch.Tensor:
    """The relevance of `inputs`: `forward` (the ruled copy's, inside its watch) run once, then the target's
    output relevance sent back through the rules by one autograd pass."""
    # Contiguous: the convolution kernels PyTorch picks, and so the rounding, depend on the memory layout.
    x = inputs.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
    with torch.enable_grad():
        output = forward(x)
        output = output if isinstance(output, torch.Tensor) else logits_of(output)
        foreign = foreign_function(output)
        if foreign is not None:
            raise AttributionError(f"{method}: no rule for {foreign}, an autograd function of the model's own: its "
                                   "backward is its author's, not a rule, and its forward cannot be looked into")
        try:
            (relevance,) = torch.autograd.grad(output, x, _output_relevance(output, target))
        except ValueError as error:  # a z-box bounds mismatch found in the first layer's backward
            raise AttributionError(f"{method}: {error}") from None
        except RuntimeError as error:
            if "modified by an inplace operation" not in str(error):
                raise
            # MViTv2 adds its relative positions into the attention logits in place, after a rule kept them
            raise AttributionError(f"{method}: the model changes a tensor in place that a rule keeps for the "
                                   "backward pass; the relevance cannot be computed through it") from None
    return relevance


def foreign_function(output: torch.Tensor) -> str | None:
    """The first custom autograd function in the output's graph that is not one of the rules (timm's
    memory-efficient activations are such functions), or None. Its forward runs without grad, so the
    watch never sees the calls it makes."""
    seen, waiting = set(), [output.grad_fn]
    while waiting:
        node = waiting.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        made_by = getattr(node, "_forward_cls", None)
        if made_by is not None and not made_by.__module__.startswith("nnvis_plugins.lrp"):
            return f"{made_by.__module__}.{made_by.__qualname__}"
        waiting.extend(following for following, _ in node.next_functions)
    return None


def _output_relevance(output: torch.Tensor, target: Target) -> torch.Tensor:
    """output * d score / d output: the target logit on its own entry for an index target."""
    values = output.detach().requires_grad_(True)
    (weights,) = torch.autograd.grad(target_scores(values, target).sum(), values)
    return values.detach() * weights


def _install_rules(canonical: Canonical, plan: composites.Composite, epsilon: float, gamma: float,
                   bounds: tuple[torch.Tensor, torch.Tensor] | None, record: dict[str, torch.Tensor] | None) -> None:
    """Replace, on the copy, the forward of every layer that has a rule by one whose backward is the rule."""
    named = plan.rule_names(canonical.ruled_layers())
    if bounds is None and "z-box" in named.values():
        raise AttributionError("LRP: the z-box rule needs bounds=(low, high), the normalized values of black and "
                               "white pixels (nnvis_plugins.lrp.box_bounds(mean, std))")
    made = {rule: make_rule(rule, epsilon, gamma, bounds) for rule in set(named.values())}
    for name, module in canonical.calls:
        rule = made[named[name]] if name in named else proportional if layers.needs_proportional_rule(module) else None
        if rule is not None:
            give_rule(module, rule, _recorder(record, name))


def give_rule(module: nn.Module, rule: Rule, record: Record | None = None) -> None:
    """Replace the forward of `module` (on the canonical copy) by one whose backward is `rule`."""
    module.forward = functools.partial(_ruled_forward, module, rule, record)


def _ruled_forward(module: nn.Module, rule: Rule, record: Record | None, x: torch.Tensor) -> torch.Tensor:
    return with_rule(module, rule, x, functools.partial(type(module).forward, module), record)


def _recorder(record: dict[str, torch.Tensor] | None, name: str) -> Record | None:
    if record is None:
        return None
    return lambda relevance: record.__setitem__(name, relevance)
