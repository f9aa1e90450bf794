"""Shared machinery of the gradient methods: targets, batched gradients, layer capture.

Every function takes a model and a normalized ``(N, C, H, W)`` batch and never
changes the model: gradients are taken with ``torch.autograd.grad`` with respect
to the inputs (or a captured activation) only, so parameter ``.grad`` stays
untouched, and every hook is removed in a ``finally``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, Union

import torch
from torch import nn

from nnvis_core.models.layers import find_layer, last_conv_layer
from nnvis_plugins.attribution.rules import relu_rule

# A class index for every input, one index per input, or a callable mapping the
# model output (N, classes) to one score per input (N,).
Target = Union[int, Sequence[int], torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


class AttributionError(ValueError):
    """A method cannot run on this model or with these arguments (one-line message)."""


def target_scores(output: torch.Tensor, target: Target) -> torch.Tensor:
    """(N,) scores picked from the model output (N, classes) by `target`."""
    if callable(target) and not isinstance(target, torch.Tensor):
        scores = target(output)
        if scores.shape != output.shape[:1]:
            raise AttributionError(f"a target callable must return one score per input, got {tuple(scores.shape)}")
        return scores
    index = torch.as_tensor(target, device=output.device).long().reshape(-1)
    if index.numel() == 1:
        index = index.expand(output.shape[0])
    if index.numel() != output.shape[0]:
        raise AttributionError(f"{index.numel()} targets for {output.shape[0]} inputs")
    return output.gather(1, index[:, None])[:, 0]


def repeat_target(target: Target, times: int, batch: int) -> Target:
    """The target for a batch where each of `batch` inputs is repeated `times` times (input-major)."""
    if callable(target) and not isinstance(target, torch.Tensor):
        return target
    index = torch.as_tensor(target).long().reshape(-1)
    if index.numel() == 1:
        return int(index)
    if index.numel() != batch:
        raise AttributionError(f"{index.numel()} targets for {batch} inputs")
    return index.repeat_interleave(times)


def check_target(target: Target, batch: int) -> None:
    """Raise AttributionError unless `target` gives one class per input (or one for all)."""
    if callable(target) and not isinstance(target, torch.Tensor):
        return
    count = torch.as_tensor(target).reshape(-1).numel()
    if count not in (1, batch):
        raise AttributionError(f"{count} targets for {batch} inputs")


def select_target(target: Target, which: torch.Tensor) -> Target:
    """The target for a batch made of inputs `which` (indices into the original batch)."""
    if callable(target) and not isinstance(target, torch.Tensor):
        return target
    index = torch.as_tensor(target).long().reshape(-1)
    return int(index) if index.numel() == 1 else index.to(which.device)[which]


def chunk_target(target: Target, start: int, stop: int) -> Target:
    if callable(target) and not isinstance(target, torch.Tensor):
        return target
    index = torch.as_tensor(target).long().reshape(-1)
    return int(index) if index.numel() == 1 else index[start:stop]


def gradient(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target,
    rule: str | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """d score / d inputs for every input, in chunks of at most `batch_size` inputs.

    rule: None for the true gradient, "guided" or "deconvnet" for a modified
    ReLU backward (see rules.py).
    """
    n = inputs.shape[0]
    check_target(target, n)
    step = n if not batch_size or batch_size >= n else batch_size
    parts = [
        fresh_input_gradient(model, inputs[start:start + step].detach().clone(),
                             chunk_target(target, start, start + step), rule)
        for start in range(0, n, step)
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def fresh_input_gradient(model: nn.Module, batch: torch.Tensor, target: Target, rule: str | None = None) -> torch.Tensor:
    """d score / d batch in one pass, for a tensor made for this call (it is marked as requiring grad)."""
    batch.requires_grad_(True)
    with torch.enable_grad():
        if rule is None:
            output = model(batch)
        else:
            with relu_rule(model, rule):
                output = model(batch)
        (grad,) = torch.autograd.grad(target_scores(output, target).sum(), batch)
    return grad


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


def forward_until(model: nn.Module, layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The output of `layer` for `inputs`, without running the layers above it."""
    with captured_output(layer, stop=True) as record:
        try:
            model(inputs)
        except _StopForward:
            pass
    if "output" not in record:
        raise AttributionError(f"layer {type(layer).__name__} was not run by the model's forward pass")
    return record["output"]


ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish)


def default_layer(model: nn.Module) -> str:
    """The layer Grad-CAM uses by default: the rectified output of the last Conv2d.

    The paper weights the last conv layer's *rectified* feature maps; at the raw
    conv output the negative parts cancel the positive ones and many maps are
    all zero (on the demo model, 70% of images). So: the ReLU (or other
    activation module) that directly follows the last Conv2d in its Sequential,
    past a BatchNorm, as in VGG, AlexNet, MobileNet and the demo net; else the
    outermost block that holds the last conv as its final part (a ResNet stage,
    whose last block ends with its ReLU; a whole Inception module; a DenseNet
    block); else the last Conv2d itself. (A layer that turns out to run twice per forward pass
    is refused when it is captured.)
    """
    conv_name = last_conv_layer(model)
    parent_name, _, child = conv_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.Sequential):
        names = [name for name, _ in parent.named_children()]
        for name in names[names.index(child) + 1:]:
            module = parent.get_submodule(name)
            if isinstance(module, (nn.BatchNorm2d, nn.Identity)):
                continue
            registered = sum(m is module for _, m in model.named_modules(remove_duplicate=False))
            if isinstance(module, ACTIVATIONS) and registered == 1:
                return f"{parent_name}.{name}" if parent_name else name
            break
        return conv_name
    if not parent_name or isinstance(parent, nn.ModuleList):
        return conv_name
    # Climb while the block is the last child of its container: a ResNet block -> its stage,
    # an Inception branch -> the whole Inception module (all branches), a dense layer -> its block.
    block = parent_name
    while "." in block:
        container_name, _, child_name = block.rpartition(".")
        container = model.get_submodule(container_name)
        if isinstance(container, nn.ModuleList) or list(dict(container.named_children()))[-1] != child_name:
            break
        block = container_name
    return block


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    """A submodule given as itself, its named_modules() name, 'last_conv' or 'auto' (default_layer)."""
    if isinstance(layer, nn.Module):
        return layer
    if layer == "auto":
        layer = default_layer(model)
    return find_layer(model, last_conv_layer(model) if layer == "last_conv" else layer)


def reduce_channels(attribution: torch.Tensor, how: str) -> torch.Tensor:
    """(..., C, H, W) -> (..., H, W): sum, abs_sum, abs_max or l2 over channels."""
    if how == "sum":
        return attribution.sum(dim=-3)
    if how == "abs_sum":
        return attribution.abs().sum(dim=-3)
    if how == "abs_max":
        return attribution.abs().amax(dim=-3)
    if how == "l2":
        return attribution.square().sum(dim=-3).sqrt()
    raise ValueError(f"unknown channel reduction {how!r}")
