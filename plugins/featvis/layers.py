"""Which layers the feature views show when the user names none (layer resolution itself is nnvis_core.toolkit)."""

from __future__ import annotations

import numpy as np
from torch import nn

from nnvis_core.toolkit import RECTIFIERS, LayerNotFound, conv_layers, model_blocks, patch_size, rectified_output


class LayerError(ValueError):
    """A layer or unit that does not suit the method (wrong kind, wrong shape, no such channel)."""


def sample_layers(model: nn.Module, count: int) -> list[str]:
    """`count` conv layers spread evenly from the second to the last (the first is shown by `filters`).

    Models with a patch embedding (ViT, Swin, ConvNeXt) have one or two convs
    at most: their layers are the repeated blocks, spread the same way, each
    read at its hidden units (:func:`hidden_units`).
    """
    if patch_size(model) is not None:
        blocks = model_blocks(model)
        picks = np.round(np.linspace(0, len(blocks) - 1, min(count, len(blocks)) + 1)[1:]).astype(int)
        return [hidden_units(model, blocks[i]) for i in dict.fromkeys(picks.tolist())]
    convs = conv_layers(model)
    if not convs:
        raise LayerNotFound(f"{type(model).__name__} has no Conv2d layer")
    if count >= len(convs) - 1:
        return convs[1:] or convs
    picks = np.round(np.linspace(0, len(convs) - 1, count + 1)[1:]).astype(int)
    return [convs[i] for i in dict.fromkeys(picks.tolist())]


def hidden_units(model: nn.Module, block: str) -> str:
    """A transformer block's MLP hidden layer (its widest Linear outside attention), else the block.

    Ghiasi et al. (2022, "What do Vision Transformers Learn?") found these
    expanded units, not the residual stream, the interpretable neurons of a ViT.
    """
    parent = model.get_submodule(block)
    attention = [name for name, module in parent.named_modules() if "attention" in type(module).__name__.lower()]
    widening = [(module.out_features / module.in_features, name) for name, module in parent.named_modules()
                if isinstance(module, nn.Linear) and module.out_features > module.in_features
                and not any(name.startswith(f"{a}.") for a in attention if a)]  # qkv widens too
    if not widening:
        return block
    best = max(ratio for ratio, _ in widening)
    return f"{block}.{next(name for ratio, name in widening if ratio == best)}"


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
