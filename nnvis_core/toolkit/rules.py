"""Deconvnet and guided-backpropagation backward rules for element-wise activations, for one pass.

For an element-wise activation ``y = f(x)`` with incoming gradient ``g = dL/dy``, a rule
replaces the gradient that flows back through it:

- ``"guided"`` (Springenberg et al. 2014, generalized): ``dL/dx = f'(x) * max(g, 0)``,
  the activation's own local derivative applied to the positive part of the incoming
  gradient. For ReLU, ``f'(x) = [x > 0]``: the paper's rule exactly;
- ``"deconvnet"`` (Zeiler & Fergus 2013): ``dL/dx = max(g, 0)``, whatever the forward
  input was: the reconstruction rectifies the signal going down.

The forward values are never changed. Covered: ReLU, ReLU6, LeakyReLU, PReLU, ELU,
CELU, SELU, Hardtanh, Hardswish, SiLU, GELU, Mish, Softplus and RReLU outside
training, as modules, as functions (``F.relu6``, ``F.leaky_relu_``, ``torch.selu_``,
``Tensor.relu_``, ...) and in place or not (see :data:`SUPPORTED_MODULES` and
:data:`SUPPORTED_FUNCTIONS`).

How: while the forward pass runs inside :func:`relu_rule`, a ``TorchFunctionMode``
intercepts every call of those functions (activation modules call them, so modules
in-place or not, reused or not, are covered too). Guided: the activation runs as it
is, so its own backward applies ``f'(x)``, and a hook on its output tensor keeps the
positive part of the incoming gradient. Deconvnet: an autograd function with the
activation's value and the rule's backward. Nothing is attached to the model (the
tensor hooks live and die with the pass's own activations): no module hooks, no
swapped modules, no flags, so there is nothing to forget to undo.

Other activations in the feature path (Tanh, Softsign, Threshold, RReLU while training,
...) raise :class:`UnsupportedActivation` naming the modules or functions, rather than
silently giving a plain gradient through them. Gates such as the Sigmoid or Hardsigmoid
of squeeze-excitation blocks keep their ordinary gradient. TorchScript models cannot be
intercepted and are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

RULES = ("deconvnet", "guided")

# Activation modules the rules apply to (each computes one of SUPPORTED_FUNCTIONS;
# nn.ReLU6 is a Hardtanh and calls F.hardtanh). nn.RReLU only outside training.
SUPPORTED_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.CELU, nn.SELU, nn.Hardtanh,
    nn.Hardswish, nn.SiLU, nn.GELU, nn.Mish, nn.Softplus, nn.RReLU,
)

# Every way to call a supported activation that can reach a TorchFunctionMode, with
# the name messages use. Modules call the F.* forms; the torch.* / Tensor.* forms and
# the torch._C._nn kernels below are there for models that call them directly.
SUPPORTED_FUNCTIONS: dict[Callable[..., Any], str] = {
    F.relu: "relu", torch.relu: "relu", torch.Tensor.relu: "relu",
    torch.relu_: "relu_", torch.Tensor.relu_: "relu_",  # F.relu_ is torch.relu_
    F.relu6: "relu6", F.hardtanh: "hardtanh", F.hardtanh_: "hardtanh_",
    F.leaky_relu: "leaky_relu", F.leaky_relu_: "leaky_relu_",
    F.prelu: "prelu", torch.Tensor.prelu: "prelu",  # F.prelu is torch.prelu
    F.elu: "elu", F.elu_: "elu_",
    F.celu: "celu", torch.celu: "celu", F.celu_: "celu_",  # F.celu_ is torch.celu_
    F.selu: "selu", torch.selu: "selu", F.selu_: "selu_",  # F.selu_ is torch.selu_
    F.hardswish: "hardswish", F.silu: "silu", F.mish: "mish",
    F.gelu: "gelu", F.softplus: "softplus",  # both torch._C._nn kernels themselves
    F.rrelu: "rrelu", torch.rrelu: "rrelu", F.rrelu_: "rrelu_",  # F.rrelu_ is torch.rrelu_
}
SUPPORTED_FUNCTIONS.update({
    getattr(torch._C._nn, name): name
    for name in ("relu6", "hardtanh", "leaky_relu", "elu", "hardswish", "hardswish_", "silu", "silu_",
                 "gelu_", "mish", "mish_")
    if hasattr(torch._C._nn, name)  # older torch versions lack some
})
_RRELU = {F.rrelu, torch.rrelu, F.rrelu_}

# Element-wise activations with no rule. Gates such as the Sigmoid / Hardsigmoid of
# squeeze-excitation blocks are not activations of the feature path and pass with
# their ordinary gradient, as in the papers' successors.
UNSUPPORTED_MODULES: tuple[type[nn.Module], ...] = (
    nn.Tanh, nn.Softsign, nn.Tanhshrink, nn.Threshold, nn.Hardshrink, nn.Softshrink, nn.LogSigmoid,
)
UNSUPPORTED_FUNCTIONS: dict[Callable[..., Any], str] = {
    torch.tanh: "tanh", torch.Tensor.tanh: "tanh", torch.tanh_: "tanh_", torch.Tensor.tanh_: "tanh_",
    F.softsign: "softsign", F.tanhshrink: "tanhshrink",
    F.threshold: "threshold", torch.threshold: "threshold", F.threshold_: "threshold_",
    F.hardshrink: "hardshrink", torch.Tensor.hardshrink: "hardshrink", F.softshrink: "softshrink",
    F.logsigmoid: "logsigmoid",
}

# One lookup per op on the fast path: function -> (name, whether a rule is defined).
_INTERCEPTED: dict[Callable[..., Any], tuple[str, bool]] = {
    **{func: (name, False) for func, name in UNSUPPORTED_FUNCTIONS.items()},
    **{func: (name, True) for func, name in SUPPORTED_FUNCTIONS.items()},
}

_ALTERNATIVES = ("use saliency, integrated_gradients, gradient_x_input, smoothgrad with base=gradient "
                 "or gradcam for this model")


def supported_names() -> str:
    """The supported activation modules, for messages: 'ReLU, ReLU6, ..., RReLU (not training)'."""
    return ", ".join(cls.__name__ + (" (not training)" if cls is nn.RReLU else "") for cls in SUPPORTED_MODULES)


class UnsupportedActivation(TypeError):
    """The model has activations for which the backward rule is not defined."""


def _positive_part(grad: torch.Tensor) -> torch.Tensor:
    return grad.clamp(min=0)


class _Deconvnet(torch.autograd.Function):
    """f(x) forward (``compute``); backward the positive part of the gradient, whatever x was.

    In-place activations stay in place: when ``compute`` returns its input, the input is
    marked dirty and its autograd history continues through this function. A function of
    its own because no built-in op has an activation's value and an unmasked gradient.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        out = compute(x)
        if out is x:
            ctx.mark_dirty(x)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad.clamp(min=0), None


def _rrelu_training(args: tuple, kwargs: dict) -> bool:
    # F.rrelu(input, lower, upper, training, inplace), torch.rrelu(_)(input, lower, upper, training, generator)
    return bool(kwargs.get("training", args[3] if len(args) > 3 else False))


class _RuleMode(TorchFunctionMode):
    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule

    def __torch_function__(self, func, types, args=(), kwargs=None):
        entry = _INTERCEPTED.get(func)
        if entry is None:  # the fast path: every other op of the forward pass
            return func(*args, **(kwargs or {}))
        kwargs = kwargs or {}
        name, supported = entry
        if not supported:
            self._refuse(name)
        if func in _RRELU and _rrelu_training(args, kwargs):
            self._refuse(f"{name} in training mode (random slopes)")
        x = args[0] if args else kwargs.get("input")
        if not (torch.is_grad_enabled() and isinstance(x, torch.Tensor) and x.is_floating_point()):
            return func(*args, **kwargs)
        if self.rule == "guided":
            # The activation itself, whose own backward applies f'(x), fed by a hook that
            # keeps the positive part of the incoming gradient: in native kernels.
            out = func(*args, **kwargs)
            if isinstance(out, torch.Tensor) and out.requires_grad:
                out.register_hook(_positive_part)
            return out
        if not args:
            kwargs = dict(kwargs)
            kwargs.pop("input")
        rest = args[1:]
        return _Deconvnet.apply(x, lambda value: func(value, *rest, **kwargs))

    def _refuse(self, what: str) -> NoReturn:
        raise UnsupportedActivation(
            f"{what} is called inside the model's forward; the {self.rule} backward rule is defined "
            f"for {supported_names()} ({_ALTERNATIVES})"
        )


def unsupported_modules(model: nn.Module) -> list[str]:
    """Names of the model's activation modules that have no deconvnet/guided rule.

    RReLU counts while it is training (its slopes are random then).
    """
    return [
        f"{name or '<model>'} ({type(module).__name__}{', training' if isinstance(module, nn.RReLU) else ''})"
        for name, module in model.named_modules()
        if isinstance(module, UNSUPPORTED_MODULES) or (isinstance(module, nn.RReLU) and module.training)
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
            f"the {rule} backward rule is defined for {supported_names()}; this model has {shown} "
            f"({_ALTERNATIVES})"
        )


@contextmanager
def relu_rule(model: nn.Module, rule: str) -> Iterator[_RuleMode]:
    """Apply a backward rule to every supported activation computed inside the block.

    The name is historical: ReLU and every activation in :data:`SUPPORTED_MODULES`.
    Run the forward pass inside the block; the backward may run after it (the rule
    is recorded in the graph). The model itself is never modified.

    >>> with relu_rule(model, "guided"):
    ...     score = model(x)[:, target].sum()
    >>> (grad,) = torch.autograd.grad(score, x)
    """
    check_supported(model, rule)
    mode = _RuleMode(rule)
    with mode:  # TorchFunctionMode.__exit__ pops the mode even when the forward raises
        yield mode
