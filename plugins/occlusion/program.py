"""A model traced into steps that the incremental engine knows how to run on a patch.

torch.fx records the forward pass as a graph of module calls, functions and
tensor methods. Each step is one node, classified by what its output depends on:

- "window": a sliding-window op (Conv2d, MaxPool2d, AvgPool2d, adaptive pools that
  are regular windows): an output pixel depends on a window of input pixels;
- "elementwise": an op whose output pixel depends only on the same pixel of its
  inputs (activations, eval-mode BatchNorm, dropout in eval mode, +, -, *, /);
- "full": anything else (flatten, linear, global pooling, attention, ...): run on
  whole maps.

In-place operations are run out of place (ReLU(inplace=True), `+=`, `x.relu_()`),
so that the engine's cached activations are never overwritten. A graph with an
in-place method the engine does not know cannot be run incrementally.
"""

from __future__ import annotations

import inspect
import operator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode


class Unsupported(Exception):
    """The model cannot be run by the incremental engine; the message says why, in one line."""


@dataclass(frozen=True)
class WindowOp:
    """A sliding-window op over (H, W): output pixel o reads the input rows
    o * stride - pad_before + j * dilation for j < kernel (same for columns)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad_before: tuple[int, int]
    pad_value: float
    apply: Callable[[torch.Tensor], torch.Tensor]  # the op on an already padded window (padding 0)


@dataclass
class Step:
    node: fx.Node
    op: str  # "input", "window", "elementwise", "full" or "output"
    call: Callable[..., Any]  # the node's computation, out of place: call(*args, **kwargs)
    window: Callable[[tuple, tuple], WindowOp | None] | None = None  # (in_shape, out_shape) -> WindowOp

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def inputs(self) -> list[fx.Node]:
        return list(self.node.all_input_nodes)


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


# Modules whose output pixel is a function of the same input pixel, and an out-of-place
# equivalent for those that can run in place.
_ACTIVATIONS: dict[type, Callable[[nn.Module], Callable]] = {
    nn.ReLU: lambda m: torch.relu,
    nn.ReLU6: lambda m: F.relu6,
    nn.LeakyReLU: lambda m: lambda x: F.leaky_relu(x, m.negative_slope),
    nn.ELU: lambda m: lambda x: F.elu(x, m.alpha),
    nn.CELU: lambda m: lambda x: F.celu(x, m.alpha),
    nn.SELU: lambda m: F.selu,
    nn.SiLU: lambda m: F.silu,
    nn.Hardswish: lambda m: F.hardswish,
    nn.Hardsigmoid: lambda m: F.hardsigmoid,
    nn.Hardtanh: lambda m: lambda x: F.hardtanh(x, m.min_val, m.max_val),
    nn.Mish: lambda m: F.mish,
    nn.Threshold: lambda m: lambda x: F.threshold(x, m.threshold, m.value),
}
_POINTWISE_MODULES = (nn.GELU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.PReLU, nn.Identity)
_DROPOUT = (nn.Dropout, nn.Dropout2d, nn.AlphaDropout)

_ELEMENTWISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg,
    torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.abs, torch.exp, torch.clamp,
    torch.maximum, torch.minimum, torch.relu, torch.sigmoid, torch.tanh,
    F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish,
    F.hardsigmoid, F.hardtanh, F.sigmoid, F.tanh, F.softplus, F.dropout, F.dropout2d,
}
_OUT_OF_PLACE_FUNCTIONS = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv, torch.relu_: torch.relu,
}
_ELEMENTWISE_METHODS = {
    "add", "sub", "mul", "div", "neg", "abs", "exp", "clamp", "relu", "sigmoid", "tanh", "contiguous", "clone",
}


def _out_of_place_function(fn: Callable) -> Callable:
    fn = _OUT_OF_PLACE_FUNCTIONS.get(fn, fn)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn
    if "inplace" not in signature.parameters:
        return fn

    def call(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.arguments["inplace"] = False
        return fn(*bound.args, **bound.kwargs)

    return call


def _module_call(module: nn.Module) -> Callable:
    for kind, make in _ACTIVATIONS.items():
        if type(module) is kind:
            return make(module)
    if getattr(module, "inplace", False):
        return lambda x, *args, **kwargs: module(x.clone(), *args, **kwargs)
    return module


def _is_elementwise_module(module: nn.Module) -> bool:
    if type(module) in _ACTIVATIONS or isinstance(module, _POINTWISE_MODULES):
        return True
    if isinstance(module, _DROPOUT):
        return not module.training
    if isinstance(module, nn.BatchNorm2d):  # per-channel affine only with running statistics
        return not module.training and module.running_mean is not None
    return False


def _conv_window(conv: nn.Conv2d) -> Callable[[tuple, tuple], WindowOp | None]:
    kernel, stride, dilation = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.dilation)
    if conv.padding == "valid":
        before = (0, 0)
    elif conv.padding == "same":
        before = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    else:
        before = _pair(conv.padding)
    if conv.padding_mode != "zeros" and before != (0, 0):
        return lambda i, o: None

    def apply(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, conv.weight, conv.bias, stride, 0, dilation, conv.groups)

    return lambda i, o: WindowOp(kernel, stride, dilation, before, 0.0, apply)


def _pool_window(pool: nn.Module) -> Callable[[tuple, tuple], WindowOp | None]:
    kernel, stride = _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size)
    padding = _pair(pool.padding)
    if isinstance(pool, nn.MaxPool2d):
        if pool.return_indices:
            return lambda i, o: None
        dilation = _pair(pool.dilation)
        apply = lambda x: F.max_pool2d(x, kernel, stride, 0, dilation)  # noqa: E731
        return lambda i, o: WindowOp(kernel, stride, dilation, padding, -float("inf"), apply)
    # AvgPool2d: explicit zero padding is exact only when the padding counts in the divisor.
    if pool.ceil_mode or pool.divisor_override is not None or (padding != (0, 0) and not pool.count_include_pad):
        return lambda i, o: None
    apply = lambda x: F.avg_pool2d(x, kernel, stride, 0)  # noqa: E731
    return lambda i, o: WindowOp(kernel, stride, (1, 1), padding, 0.0, apply)


def _adaptive_window(pool: nn.Module) -> Callable[[tuple, tuple], WindowOp | None]:
    """An adaptive pool is a plain window op when the input size is a multiple of the output size."""
    maximum = isinstance(pool, nn.AdaptiveMaxPool2d)

    def window(in_shape: tuple, out_shape: tuple) -> WindowOp | None:
        if len(in_shape) != 4 or any(i % o for i, o in zip(in_shape[-2:], out_shape[-2:])):
            return None
        kernel = tuple(i // o for i, o in zip(in_shape[-2:], out_shape[-2:]))

        def apply(x: torch.Tensor) -> torch.Tensor:
            return F.max_pool2d(x, kernel, kernel) if maximum else F.avg_pool2d(x, kernel, kernel)

        return WindowOp(kernel, kernel, (1, 1), (0, 0), -float("inf") if maximum else 0.0, apply)

    return window


def _window_of(module: nn.Module) -> Callable[[tuple, tuple], WindowOp | None] | None:
    if isinstance(module, nn.Conv2d):
        return _conv_window(module)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return _pool_window(module)
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and not getattr(module, "return_indices", 0):
        return _adaptive_window(module)
    return None


def _step(model: nn.Module, node: fx.Node) -> Step:
    if node.op == "placeholder":
        return Step(node, "input", lambda: None)
    if node.op == "output":
        return Step(node, "output", lambda value: value)
    if node.op == "get_attr":
        value = _fetch_attr(model, node.target)
        return Step(node, "full", lambda: value)
    if node.op == "call_module":
        module = model.get_submodule(node.target)
        window = _window_of(module)
        if window is not None:
            return Step(node, "window", module, window)
        return Step(node, "elementwise" if _is_elementwise_module(module) else "full", _module_call(module))
    if node.op == "call_function":
        if isinstance(node.kwargs.get("out"), fx.Node):
            raise Unsupported(f"{node.name} writes into an out= tensor")
        fn = _out_of_place_function(node.target)
        base = _OUT_OF_PLACE_FUNCTIONS.get(node.target, node.target)
        return Step(node, "elementwise" if base in _ELEMENTWISE_FUNCTIONS else "full", fn)
    if node.op == "call_method":
        name = node.target
        if name.endswith("_") and not name.endswith("__"):
            if name[:-1] not in _ELEMENTWISE_METHODS:
                raise Unsupported(f"in-place method .{name}() at {node.name}")
            name = name[:-1]
        return Step(node, "elementwise" if name in _ELEMENTWISE_METHODS else "full",
                    lambda self, *args, _name=name, **kwargs: getattr(self, _name)(*args, **kwargs))
    raise Unsupported(f"graph node {node.name} of kind {node.op}")


def _fetch_attr(model: nn.Module, target: str) -> Any:
    value: Any = model
    for part in target.split("."):
        value = getattr(value, part)
    return value


class Program:
    """The traced forward pass of `model` as a list of steps in execution order."""

    def __init__(self, model: nn.Module) -> None:
        if isinstance(model, torch.jit.ScriptModule):
            raise Unsupported("a TorchScript model cannot be traced by torch.fx")
        try:
            graph = fx.Tracer().trace(model)
        except Exception as error:  # tracing runs arbitrary forward code
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise Unsupported(f"torch.fx cannot trace {type(model).__name__}: {first}") from None
        self.model = model
        self.steps = [_step(model, node) for node in graph.nodes]
        inputs = [s for s in self.steps if s.op == "input"]
        if len(inputs) != 1:
            raise Unsupported(f"the forward pass takes {len(inputs)} inputs; occlusion needs exactly one")
        self.input = inputs[0].name
        # Last step that reads each value, so that a batch can free it right after.
        self.last_use: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            for node in step.inputs:
                self.last_use[node.name] = i

    def run(self, image: torch.Tensor, flops: dict[str, float] | None = None) -> dict[str, Any]:
        """Every node's value for `image`, computed step by step (the cache of the engine).

        flops: if given, filled with the floating-point operations of each step (matrix
        products and convolutions, as torch's FlopCounterMode counts them).
        """
        values: dict[str, Any] = {}
        with counted_flops() if flops is not None else nullcontext() as counter:
            for step in self.steps:
                if step.op == "input":
                    values[step.name] = image
                    continue
                before = counter.get_total_flops() if counter is not None else 0
                args, kwargs = resolve(step.node, values)
                values[step.name] = step.call(*args, **kwargs)
                if counter is not None:
                    flops[step.name] = float(counter.get_total_flops() - before)
        return values

    def module_nodes(self, name: str) -> list[str]:
        """Names of the nodes computed inside the submodule `name` (in execution order)."""
        found = []
        for step in self.steps:
            stack = step.node.meta.get("nn_module_stack") or {}
            if any(key.split("@")[0] == name for key in stack):
                found.append(step.name)
        return found


@contextmanager
def counted_flops():
    """A FlopCounterMode, with nn.MultiheadAttention's fused inference path switched off while it
    counts: the fused kernel hides its matrix products from the counter."""
    mha = getattr(torch.backends, "mha", None)
    fused = mha.get_fastpath_enabled() if mha is not None else None
    try:
        if mha is not None:
            mha.set_fastpath_enabled(False)
        with FlopCounterMode(display=False) as counter:
            yield counter
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(fused)


def resolve(node: fx.Node, values: dict[str, Any]) -> tuple[tuple, dict]:
    """The node's args and kwargs with every graph node replaced by its value."""
    args = fx.node.map_arg(node.args, lambda n: values[n.name])
    kwargs = fx.node.map_arg(node.kwargs, lambda n: values[n.name])
    return args, kwargs
