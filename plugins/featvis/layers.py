"""Which layers to show when the user names none, and the layer a rectified output is computed from."""

from __future__ import annotations

import numpy as np
from torch import nn

from nnvis_core.models.layers import LayerNotFound, find_layer

# Element-wise activations: a unit's pre-activation is what the module before them outputs.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.Softplus)
RECTIFIERS = (nn.ReLU, nn.ReLU6)  # exact zeros: what sparsity counts


class LayerError(ValueError):
    """A layer or unit that does not suit the method (wrong kind, wrong shape, no such channel)."""


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the Conv2d layers, in definition order."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def first_conv(model: nn.Module) -> str:
    convs = conv_layers(model)
    if not convs:
        raise LayerNotFound(f"{type(model).__name__} has no Conv2d layer")
    return convs[0]


def _siblings(model: nn.Module, name: str) -> tuple[str, list[str]] | None:
    """(parent name, child names) when `name` sits in a Sequential, else None."""
    parent_name, _, _ = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not isinstance(parent, nn.Sequential):
        return None
    return parent_name, [child for child, _ in parent.named_children()]


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def _runs_once(model: nn.Module, module: nn.Module) -> bool:
    return sum(m is module for _, m in model.named_modules(remove_duplicate=False)) == 1


def rectified_output(model: nn.Module, conv: str) -> str:
    """The activation module right after `conv` (past a BatchNorm) in its Sequential, else `conv` itself."""
    found = _siblings(model, conv)
    if found is None:
        return conv
    parent, children = found
    for child in children[children.index(conv.rpartition(".")[2]) + 1:]:
        module = model.get_submodule(_join(parent, child))
        if isinstance(module, (nn.BatchNorm2d, nn.Identity)):
            continue
        if isinstance(module, ACTIVATIONS) and _runs_once(model, module):
            return _join(parent, child)
        break
    return conv


def preactivation(model: nn.Module, name: str) -> str:
    """For an element-wise activation module that follows another module in a Sequential, that module.

    Optimizing a rectified output gets no gradient while the unit is off (a
    channel that is zero on the starting image stays zero); its pre-activation
    is the same unit without that dead zone (Olah et al. optimize pre-ReLU layers).
    Any other layer is returned unchanged.
    """
    module = find_layer(model, name)
    found = _siblings(model, name)
    if not isinstance(module, ACTIVATIONS) or found is None:
        return name
    parent, children = found
    position = children.index(name.rpartition(".")[2])
    return _join(parent, children[position - 1]) if position > 0 else name


def sample_layers(model: nn.Module, count: int) -> list[str]:
    """`count` conv layers spread evenly from the second to the last (the first is shown by `filters`)."""
    convs = conv_layers(model)
    if not convs:
        raise LayerNotFound(f"{type(model).__name__} has no Conv2d layer")
    if count >= len(convs) - 1:
        return convs[1:] or convs
    picks = np.round(np.linspace(0, len(convs) - 1, count + 1)[1:]).astype(int)
    return [convs[i] for i in dict.fromkeys(picks.tolist())]


def middle_rectified_layer(model: nn.Module) -> str:
    """The rectified output of the conv layer halfway through the network."""
    convs = conv_layers(model)
    if not convs:
        raise LayerNotFound(f"{type(model).__name__} has no Conv2d layer")
    return rectified_output(model, convs[len(convs) // 2])


def rectifier_layers(model: nn.Module) -> list[str]:
    """ReLU modules (their outputs hold exact zeros), in definition order."""
    return [name for name, module in model.named_modules() if isinstance(module, RECTIFIERS)]


def spread(count: int, total: int) -> list[int]:
    """`count` indices spread evenly over range(total) (all of them when count >= total)."""
    if count >= total:
        return list(range(total))
    return sorted(set(np.linspace(0, total - 1, count).round().astype(int).tolist()))
