"""The functions a model calls between its layers: each gets its rule, or is refused.

Inside :class:`FunctionalWatch` (a ``TorchFunctionMode``, entered around the LRP forward pass on the
canonical copy), every call on a tensor that carries relevance is looked at (parameters, buffers and
the forward inside the rules' own autograd functions, which runs without grad, are constants and pass
untouched). calls.py sorts the calls:

- an activation, whether from an activation module (``nn.ReLU`` calls ``F.relu``) or written in a
  forward (``F.relu(x, inplace=True)``, ``x.relu_()``), runs with the pass-through backward of
  :func:`~nnvis_plugins.lrp.backward.passing`, and so do products with and quotients by a constant
  and negations (the epsilon rule on ``z = c x`` passes relevance unchanged);
- an average pooling written as a function (``F.adaptive_avg_pool2d(x, 1)``), a mean or sum over
  axes, an interpolation, a sum with a constant get the epsilon rule, as their module forms do;
- reshapes, selections, concatenation, padding, max pooling keep their ordinary backward, which
  routes each output's relevance to the value it came from.

Everything else is refused in one line that names the call and the module it ran in: a sum,
difference, product or quotient of two activations (a residual sum that is not one of torchvision's
ResNet blocks, a gate), the non-linearities sigmoid, tanh, softmax and their relatives, a Linear or
convolution written as a function, and any call calls.py does not know.
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
from nnvis_plugins.lrp import calls
from nnvis_plugins.lrp.backward import in_place_sum, passing, with_rule
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


def carries(value: object) -> bool:
    """Whether a value is a tensor that carries relevance (it comes from the input)."""
    return isinstance(value, torch.Tensor) and value.requires_grad


def carries_any(value: object) -> bool:
    """Whether a value, or a tensor in a list or tuple of them (torch.cat's, chunk's), carries relevance."""
    if isinstance(value, (list, tuple)):
        return any(carries(item) for item in value)
    return carries(value)


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
    """Every call on a relevance-carrying tensor with its rule (calls.py), or refused in one line."""

    method = "LRP"
    gate_note = (": LRP splits sums only in torchvision's ResNet blocks, and knows no rule for gates or sigmoid-like "
                 "functions")

    def __init__(self, where: Callable[[], str], stabilizer: float = STABILIZER) -> None:
        """where: names the innermost module running; stabilizer: keeps the epsilon rule's denominators from zero."""
        super().__init__()
        self.where, self.stabilizer = where, stabilizer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not torch.is_grad_enabled() or not any(carries_any(v) for v in (*args, *kwargs.values())):
            return func(*args, **kwargs)
        handled = self._rule_for(func, args, kwargs)
        if handled is not None:
            return handled()
        result = func(*args, **kwargs)
        if calls.routes(func) or not carries_any(result):  # x.shape, x.size(), x.argmax(): no relevance
            return result
        self._refuse(f"{calls.name_of(func)}, a function {self.method} has no rule for")

    def _rule_for(self, func, args: tuple, kwargs: dict) -> Callable[[], torch.Tensor] | None:
        """The call computed with its rule, None for one that keeps its ordinary backward; refuses what has no rule."""
        x = args[0] if args else kwargs.get("input")
        rest, extra = args[1:], {key: value for key, value in kwargs.items() if key != "input"}

        def compute(value: torch.Tensor) -> torch.Tensor:
            return func(value, *rest, **extra)
        if func in ACTIVATION_FUNCTIONS and carries(x):
            return lambda: passing(x, compute)
        if (func in POOLING_FUNCTIONS or func in calls.LINEAR) and carries(x):
            return lambda: proportional_call(x, compute, self.stabilizer)
        if func in NON_LINEARITIES and carries(x):
            self._refuse(f"the non-linearity {NON_LINEARITIES[func]}", gates=True)
        if func in calls.LINEAR_MAPS:
            self._refuse(f"{func.__name__} called as a function (only Linear and Conv modules get a rule)")
        if func in calls.NEGATIONS and carries(x) and not rest:
            return lambda: passing(x, compute)
        if func in COMBINATIONS:
            return self._combination(func, args, kwargs)
        return None

    def _combination(self, func, args: tuple, kwargs: dict) -> Callable[[], torch.Tensor] | None:
        """Sums, differences, products and quotients with a constant; those of two activations are refused."""
        if func in calls.IN_PLACE_SUMS and len(args) == 2 and not kwargs and carries(args[0]) and not carries(args[1]):
            a, b = args  # x += c arrives as add_: the epsilon rule, in place
            return lambda: self.in_place(a, -b if func in calls.IN_PLACE_DIFFERENCES else b)
        if sum(carries(value) for value in args[:2]) == 2:
            self._refuse(f"the {_WORDS[COMBINATIONS[func]]} of two activations", gates=True)
        if len(args) != 2 or kwargs:  # alpha=, out=, rounding_mode=: left to the refusal of unknown calls
            return None
        a, b = args
        if func in calls.PRODUCTS or func in calls.QUOTIENTS:
            if func in calls.QUOTIENTS and carries(b):
                self._refuse("a division by an activation")
            carrier, other = (a, b) if carries(a) else (b, a)
            return lambda: passing(carrier, lambda x: func(x, other) if carrier is a else func(other, x))
        if func in calls.SUMS:
            carrier, other = (a, b) if carries(a) else (b, a)
            return lambda: proportional_call(carrier, lambda x: x + other, self.stabilizer)
        if func in calls.DIFFERENCES or func in calls.RIGHT_DIFFERENCES:
            left, right = (a, b) if func in calls.DIFFERENCES else (b, a)  # __rsub__(a, b) is b - a
            return lambda: (proportional_call(left, lambda x: x - right, self.stabilizer) if carries(left)
                            else proportional_call(right, lambda x: left - x, self.stabilizer))
        return None  # a matrix product with a constant: a Linear written by hand, refused as unknown

    def in_place(self, a: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
        """in_place_sum, or a one-line refusal where autograd cannot change `a` in place (a view a rule returned)."""
        try:
            return in_place_sum(a, b, self.stabilizer)
        except RuntimeError as error:
            if "modified inplace" not in str(error):
                raise
            self._refuse("a sum computed in place into a view autograd cannot rewrite")

    def _refuse(self, what: str, gates: bool = False) -> NoReturn:
        raise AttributionError(f"{self.method}: no rule for {what} in {self.where()}{self.gate_note if gates else ''}")


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
