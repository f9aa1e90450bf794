"""The functions a model calls between its layers: activations pass relevance, the rest is checked.

Inside :class:`FunctionalWatch` (a ``TorchFunctionMode``, entered around the LRP forward pass on the
canonical copy), every call of an activation function, whether from an activation module
(``nn.ReLU`` calls ``F.relu``) or written in a forward (``F.relu(x, inplace=True)``,
``x.relu_()``), runs with the pass-through backward of :func:`~nnvis_plugins.lrp.backward.passing`,
and every average pooling written as a function (``F.adaptive_avg_pool2d(x, 1)`` in a forward)
gets the proportional rule its module form gets. Calls LRP has no rule for are refused in one
line that names the module they ran in:

- a sum, difference, product or quotient of two activations (a residual sum that is not one of
  torchvision's ResNet blocks, a gate): the gradient would copy relevance to both operands;
- the non-linearities sigmoid, tanh, softmax and their relatives applied to an activation.

Only calls on tensors that carry relevance are looked at (constants and the forward inside the
rules' own autograd functions, which runs without grad, pass untouched).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from nnvis_core.toolkit import AttributionError
from nnvis_plugins.lrp.backward import passing, with_rule
from nnvis_plugins.lrp.rules import STABILIZER, epsilon_rule, proportional

# Every way an activation of layers.PASSING_ACTIVATIONS reaches a TorchFunctionMode (nn.ReLU6 calls
# F.hardtanh), and the forms a forward may call itself.
ACTIVATION_FUNCTIONS: set[Callable[..., Any]] = {
    F.relu, torch.relu, torch.Tensor.relu, torch.relu_, torch.Tensor.relu_, F.relu6, F.hardtanh, F.hardtanh_,
    F.leaky_relu, F.leaky_relu_, F.elu, F.elu_, F.gelu, F.silu, F.hardswish, F.mish, F.softplus,
}
POOLING_FUNCTIONS: set[Callable[..., Any]] = {
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
}
_BINARY = ("add", "sub", "mul", "div", "matmul")
COMBINATIONS: dict[Callable[..., Any], str] = {
    getattr(owner, form.format(op)): op
    for op in _BINARY for owner in (torch, torch.Tensor) for form in ("{}", "{}_", "__{}__", "__i{}__", "__r{}__")
    if hasattr(owner, form.format(op))
}
NON_LINEARITIES: dict[Callable[..., Any], str] = {
    torch.sigmoid: "sigmoid", torch.Tensor.sigmoid: "sigmoid", torch.tanh: "tanh", torch.Tensor.tanh: "tanh",
    F.softmax: "softmax", torch.softmax: "softmax", torch.Tensor.softmax: "softmax",
    F.log_softmax: "log_softmax", torch.Tensor.log_softmax: "log_softmax", F.hardsigmoid: "hardsigmoid",
    F.softsign: "softsign", F.tanhshrink: "tanhshrink", F.logsigmoid: "logsigmoid", torch.exp: "exp",
    torch.Tensor.exp: "exp",
}
_WORDS = {"add": "sum", "sub": "difference", "mul": "product", "div": "quotient", "matmul": "matrix product"}


def _carries(value: object) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad


class _Pooling(nn.Module):
    """An average pooling called as a function, as the layer the proportional rule reads."""

    def __init__(self, compute: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.compute = compute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.compute(x)


def proportional_call(x: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor],
                      epsilon: float = STABILIZER) -> torch.Tensor:
    """``compute(x)`` for a map linear in x (an average, a sum over some axes), whose backward gives each
    input its share of the outputs: R_j = sum_k x_j dz_k/dx_j R_k / z_k (the epsilon rule, epsilon the stabilizer)."""
    rule = proportional if epsilon == STABILIZER else epsilon_rule(epsilon)
    return with_rule(_Pooling(compute), rule, x, compute)


class FunctionalWatch(TorchFunctionMode):
    """Activations with the pass-through backward; refusals for what has no rule."""

    def __init__(self, where: Callable[[], str]) -> None:
        super().__init__()
        self.where = where

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not torch.is_grad_enabled():
            return func(*args, **kwargs)
        if func in ACTIVATION_FUNCTIONS or func in POOLING_FUNCTIONS:
            x = args[0] if args else kwargs.get("input")
            if _carries(x):
                rest = args[1:]
                extra = {key: value for key, value in kwargs.items() if key != "input"}

                def compute(value: torch.Tensor) -> torch.Tensor:
                    return func(value, *rest, **extra)
                if func in POOLING_FUNCTIONS:
                    return proportional_call(x, compute)
                return passing(x, compute)
        elif func in COMBINATIONS:
            if sum(_carries(value) for value in args[:2]) == 2:
                self._refuse(f"the {_WORDS[COMBINATIONS[func]]} of two activations")
        elif func in NON_LINEARITIES:
            if _carries(args[0] if args else kwargs.get("input")):
                self._refuse(f"the non-linearity {NON_LINEARITIES[func]}")
        return func(*args, **kwargs)

    def _refuse(self, what: str) -> NoReturn:
        raise AttributionError(f"LRP: no rule for {what} in {self.where()}: LRP splits sums only in torchvision's "
                               "ResNet blocks, and knows no rule for gates or sigmoid-like functions")


@contextmanager
def watched(model: nn.Module, watch: Callable[[Callable[[], str]], TorchFunctionMode] = FunctionalWatch
            ) -> Iterator[TorchFunctionMode]:
    """Run the model's forward inside `watch` (a FunctionalWatch or an extension of it, built from a function
    naming the innermost module running); refusals name that module.

    The module hooks that keep track of it go on `model`, which must be the canonical copy.
    """
    running: list[str] = []

    def enter(label: str) -> None:
        running.append(label)

    def leave(*_) -> None:  # a forward hook that returned a value would replace the module's output
        running.pop()

    for name, module in model.named_modules():
        label = f"{name or '<model>'} ({type(module).__name__})"
        module.register_forward_pre_hook(lambda *_, label=label: enter(label))
        module.register_forward_hook(leave)
    with watch(lambda: running[-1] if running else "the model's forward") as mode:
        yield mode
