"""Which layers synthesis reads when the user names none: activation outputs spread over the depth.

Textures need statistics from several depths (Gatys et al. use conv1_1 to
conv5_1 of VGG): early layers fix colours and fine grain, deep ones larger
structure. The picks follow the model family, as ``toolkit.default_layer`` does.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from nnvis_core.toolkit import (
    ACTIVATIONS,
    LayerNotFound,
    conv_layers,
    find_layer,
    folds_the_batch,
    is_stem,
    model_blocks,
    patch_size,
    readable_problem,
    rectified_output,
    repeated_blocks,
    tensor_output,
    zero_output,
)

DEFAULT_COUNT = 4


def spread_layers(model: nn.Module, count: int = DEFAULT_COUNT) -> list[str]:
    """`count` layers from the first to the last activation, in forward order.

    Convnets: the rectified output of evenly spaced Conv2d layers (the ReLU that
    follows each in its Sequential, as in VGG and the demo net), or, where the
    conv sits inside a residual block (ResNet), that block, whose output is
    rectified. Models with a patch embedding (ViT, Swin, ConvNeXt): evenly spaced
    blocks of their repeated run, read as maps (tokens and channels-last outputs
    are reshaped by ``toolkit.as_map``).
    """
    if count < 1:
        raise ValueError(f"layer count must be at least 1, got {count}")
    if patch_size(model) is not None:
        blocks = model_blocks(model)
        return [blocks[i] for i in _evenly(count, len(blocks))]
    convs = [name for name in conv_layers(model) if not folds_the_batch(model, name)]  # not MViT's pooling convs
    if not convs:
        raise LayerNotFound(f"{type(model).__name__} has no Conv2d layer and no patch embedding: name the layers")
    if is_stem(model, convs[-1]):  # HieraDet, Hiera, MViTv2: one conv embedding, then blocks
        blocks, problem = _readable_blocks(model)
        if problem is None:
            return [blocks[i] for i in _evenly(count, len(blocks))]
        raise LayerNotFound(f"{type(model).__name__}: its convolutions all run early (the last, {convs[-1]}, before "
                            f"a quarter of its layers with weights) and {problem}, so the picks would read only "
                            "the input's surface; "
                            "name the layers (see nnvis layers)")
    after = {conv: _activation_after(model, conv) for conv in convs}
    live = [conv for conv in convs if not zero_output(model, after[conv])] or convs
    return list(dict.fromkeys(after[live[i]] for i in _evenly(count, len(live))))


def _readable_blocks(model: nn.Module) -> tuple[list[str], str | None]:
    """The model's run of repeated blocks (toolkit.repeated_blocks), and the problem of the first of them
    that gives no map a feature reader can read (None when all do: HieraDet's channels-last stages; not
    Hiera's unrolled tokens, nor MViTv2's (tokens, size) pairs)."""
    try:
        blocks, _ = repeated_blocks(model)
    except LayerNotFound:
        return [], ("it has no run of repeated blocks that give maps nnvis can read (its blocks return pairs, "
                    "or tokens in an order it cannot lay on a grid)")
    problems = ((b, readable_problem(model, b, gradient=False)) for b in blocks)
    block, problem = next(((b, p) for b, p in problems if p is not None), (None, None))
    return blocks, None if problem is None else f"its block {block} gives no map nnvis can read: {problem}"


def middle_layer(model: nn.Module) -> str:
    """One layer halfway through (the content layer of style transfer)."""
    layers = spread_layers(model, 5)
    return layers[len(layers) // 2]


def parse_layers(model: nn.Module, text: str, count: int = DEFAULT_COUNT) -> list[str]:
    """A `layers` parameter: `auto` (spread_layers) or comma-separated layer names, each checked."""
    if text.strip() == "auto":
        return spread_layers(model, count)
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError("layers: give 'auto' or comma-separated layer names (see nnvis layers)")
    for name in names:
        find_layer(model, name)
    return names


def _evenly(count: int, total: int) -> list[int]:
    if count >= total:
        return list(range(total))
    return list(dict.fromkeys(np.linspace(0, total - 1, count).round().astype(int).tolist()))


def _activation_after(model: nn.Module, conv: str) -> str:
    """The rectified output after `conv`, else the block it belongs to, else the conv itself: the first of
    them that returns a map (an HRNet stage returns a list of maps, one per branch)."""
    after = _rectified_or_block(model, conv)
    return after if tensor_output(model, after) else conv


def _rectified_or_block(model: nn.Module, conv: str) -> str:
    rectified = rectified_output(model, conv)
    if rectified != conv:
        return rectified
    after = _activation_sibling(model, conv)
    if after is not None:
        return after
    # Not followed by an activation module: climb to the block the conv belongs to,
    # the child of a Sequential stage (ResNet's layer2.1), whose output has passed its activation.
    parts = conv.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        parent = model.get_submodule(".".join(parts[:depth - 1])) if depth > 1 else model
        if isinstance(parent, nn.Sequential):
            return ".".join(parts[:depth])
    return conv


def _activation_sibling(model: nn.Module, conv: str) -> str | None:
    """For a conv that is a direct child of the model (ResNet's stem: conv1, bn1, relu), the activation
    module defined right after it, past a BatchNorm; else None. Only there: inside a block, one
    activation module is often called twice (ResNet's BasicBlock), which a hook cannot read."""
    parent_name, _, child = conv.rpartition(".")
    if parent_name:
        return None
    parent = model
    names = list(dict(parent.named_children()))
    for name in names[names.index(child) + 1:]:
        module = getattr(parent, name)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        if isinstance(module, ACTIVATIONS):
            return name
        return None
    return None
