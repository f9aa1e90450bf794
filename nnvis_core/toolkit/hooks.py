"""Forward hooks that read a layer's values, and a forward pass that stops at a layer.

Every hook is removed when its ``with`` block ends, whether the block succeeds
or raises, so a method can never leave one behind.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from nnvis_core.models.layers import resolve_layer
from nnvis_core.toolkit.targets import AttributionError


class _StopForward(Exception):
    """Raised from a hook to skip the rest of a forward pass once a layer is captured."""


@contextmanager
def captured_output(layer: nn.Module, stop: bool = False) -> Iterator[dict]:
    """Record `layer`'s output during the forward passes run inside the block.

    The saved tensor is the layer's own output; the rest of the network gets a
    clone, so that an in-place op downstream (``ReLU(inplace=True)``) cannot
    change what was saved, and gradients with respect to the saved tensor are the
    gradients of the layer output. With ``stop=True`` the forward pass ends at the
    layer (use :func:`forward_until`). A layer run twice in one pass is an error:
    its output would be ambiguous.
    """
    record: dict = {}

    def hook(module: nn.Module, args, output):
        if not isinstance(output, torch.Tensor):
            raise AttributionError(f"layer {type(module).__name__} returns {type(output).__name__}, not a tensor")
        if "output" in record:
            raise AttributionError(
                f"layer {type(module).__name__} runs more than once per forward pass; pick a layer that runs once"
            )
        record["output"] = output
        if stop:
            raise _StopForward
        return output.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield record
    finally:
        handle.remove()


def forward_until(model: nn.Module, layer: nn.Module | str, inputs: torch.Tensor) -> torch.Tensor:
    """The output of `layer` for `inputs`, without running the layers above it.

    layer: the submodule, or its name as `nnvis layers` lists it ('auto' and 'last_conv' too),
    resolved like every toolkit function that takes a layer (resolve_layer).
    """
    layer = resolve_layer(model, layer)
    with captured_output(layer, stop=True) as record:
        try:
            model(inputs)
        except _StopForward:
            pass
    if "output" not in record:
        raise AttributionError(f"layer {type(layer).__name__} was not run by the model's forward pass")
    return record["output"]


@contextmanager
def captured(modules: Sequence[tuple[nn.Module, bool]]) -> Iterator[list[torch.Tensor | None]]:
    """Record, detached, the input (flag True) or output of each module on every forward pass.

    Slot i of the yielded list holds module i's latest value; for reading
    features of many layers in one pass without keeping a graph.
    """
    record: list[torch.Tensor | None] = [None] * len(modules)
    handles = []

    def keeper(slot: int, read_input: bool):
        if read_input:
            return lambda module, args: record.__setitem__(slot, args[0].detach())
        return lambda module, args, output: record.__setitem__(slot, output.detach())

    try:
        for slot, (module, read_input) in enumerate(modules):
            hook = keeper(slot, read_input)
            handles.append(module.register_forward_pre_hook(hook) if read_input else module.register_forward_hook(hook))
        yield record
    finally:
        for handle in handles:
            handle.remove()
