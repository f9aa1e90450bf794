"""Modified ReLU backward rules (deconvnet, guided backpropagation), applied for one pass.

A rule replaces the gradient that flows back through every ReLU of the model:

- ``"deconvnet"`` (Zeiler & Fergus 2013): pass the positive part of the incoming
  gradient, whatever the sign of the forward input was;
- ``"guided"`` (Springenberg et al. 2014): pass the incoming gradient only where
  both it and the forward input are positive.

How: while the forward pass runs inside :func:`relu_rule`, a ``TorchFunctionMode``
intercepts every ReLU call (``nn.ReLU`` modules, in-place or not, reused or not,
since they call ``F.relu``; ``F.relu``, ``torch.relu``, ``Tensor.relu`` and their
in-place forms called inside ``forward``). Guided: the ReLU runs as it is and a
hook on its output tensor keeps the positive part of the incoming gradient.
Deconvnet: an autograd function with the ReLU's value and the rule's backward.
Nothing is attached to the model (the tensor hooks live and die with the pass's
own activations): no module hooks, no swapped modules, no flags, so there is
nothing to forget to undo. Activations
for which no rule is defined (GELU, SiLU, LeakyReLU, ...) raise
:class:`UnsupportedActivation` naming the modules or functions, rather than
silently giving a plain gradient through them. TorchScript models cannot be
intercepted and are refused.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

RULES = ("deconvnet", "guided")

# Element-wise activations with no deconvnet/guided rule. Gates such as the
# Sigmoid of squeeze-excitation blocks are not activations of the feature path
# and pass with their ordinary gradient, as in the papers' successors.
UNSUPPORTED_MODULES: tuple[type[nn.Module], ...] = (
    nn.GELU, nn.SiLU, nn.ELU, nn.CELU, nn.SELU, nn.LeakyReLU, nn.PReLU, nn.RReLU,
    nn.Mish, nn.Hardswish, nn.Hardtanh, nn.Softplus, nn.Tanh,
)  # nn.ReLU6 is a Hardtanh
UNSUPPORTED_FUNCTIONS = {
    F.gelu: "gelu", F.silu: "silu", F.elu: "elu", F.celu: "celu", F.selu: "selu",
    F.leaky_relu: "leaky_relu", F.prelu: "prelu", F.rrelu: "rrelu", F.mish: "mish",
    F.hardswish: "hardswish", F.hardtanh: "hardtanh", F.relu6: "relu6", F.softplus: "softplus",
    torch.tanh: "tanh", torch.Tensor.tanh: "tanh",
}
_INTERCEPTED: dict = {
    **{f: "unsupported" for f in UNSUPPORTED_FUNCTIONS},
    F.relu: "relu", torch.relu: "relu", torch.Tensor.relu: "relu",
    torch.relu_: "relu_", torch.Tensor.relu_: "relu_",  # F.relu_ is torch.relu_
}


class UnsupportedActivation(TypeError):
    """The model has activations for which the backward rule is not defined."""


def _positive_part(grad: torch.Tensor) -> torch.Tensor:
    return grad.clamp(min=0)


class _DeconvnetReLU(torch.autograd.Function):
    """max(x, 0) forward; backward the positive part of the gradient, whatever the sign of x.

    Supports in-place. A function of its own because no built-in op has a ReLU's value
    and an unmasked gradient without extra full-size passes.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, inplace: bool) -> torch.Tensor:  # type: ignore[override]
        if inplace:
            ctx.mark_dirty(x)
            return x.relu_()
        return x.relu()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad.clamp(min=0), None


class _RuleMode(TorchFunctionMode):
    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kind = _INTERCEPTED.get(func)
        if kind is None:  # the fast path: every other op of the forward pass
            return func(*args, **(kwargs or {}))
        kwargs = kwargs or {}
        if kind == "unsupported":
            raise UnsupportedActivation(
                f"{UNSUPPORTED_FUNCTIONS[func]} is called inside the model's forward; the {self.rule} backward "
                "rule is defined for ReLU only (use saliency, integrated_gradients, gradient_x_input, "
                "smoothgrad with base=gradient or gradcam for this model)"
            )
        x = args[0]
        if not (torch.is_grad_enabled() and isinstance(x, torch.Tensor) and x.is_floating_point()):
            return func(*args, **kwargs)
        if self.rule == "guided":
            # The ReLU itself, whose own backward keeps the gradient where x > 0, fed by a
            # hook that keeps its positive part: both conditions, in native kernels.
            out = func(*args, **kwargs)
            if out.requires_grad:
                out.register_hook(_positive_part)
            return out
        inplace = kind == "relu_" or bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
        return _DeconvnetReLU.apply(x, inplace)


def unsupported_modules(model: nn.Module) -> list[str]:
    """Names of the model's activation modules that have no deconvnet/guided rule."""
    return [
        f"{name or '<model>'} ({type(module).__name__})"
        for name, module in model.named_modules()
        if isinstance(module, UNSUPPORTED_MODULES)
    ]


def check_supported(model: nn.Module, rule: str) -> None:
    """Raise UnsupportedActivation (naming the modules) when the rule cannot apply to the model."""
    if rule not in RULES:
        raise ValueError(f"unknown backward rule {rule!r}; use one of {', '.join(RULES)}")
    if isinstance(model, torch.jit.ScriptModule):
        raise UnsupportedActivation(
            f"the {rule} rule cannot see inside a TorchScript model; load it as an nn.Module "
            "(--model PATH --arch ... with a state_dict)"
        )
    bad = unsupported_modules(model)
    if bad:
        shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        raise UnsupportedActivation(
            f"the {rule} backward rule is defined for ReLU only; this model has {shown} "
            "(use saliency, integrated_gradients, gradient_x_input, smoothgrad with base=gradient "
            "or gradcam for this model)"
        )


@contextmanager
def relu_rule(model: nn.Module, rule: str) -> Iterator[_RuleMode]:
    """Apply a ReLU backward rule to every ReLU computed inside the block.

    Run the forward pass inside the block; the backward may run after it (the
    rule is recorded in the graph). The model itself is never modified.

    >>> with relu_rule(model, "guided"):
    ...     score = model(x)[:, target].sum()
    >>> (grad,) = torch.autograd.grad(score, x)
    """
    check_supported(model, rule)
    mode = _RuleMode(rule)
    with mode:  # TorchFunctionMode.__exit__ pops the mode even when the forward raises
        yield mode
