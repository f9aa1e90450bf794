"""`nnvis layers`: every layer of a model with what it outputs and which defaults pick it.

One no-grad pass of a blank image at the model's input size records each
layer's output; its layout (nnvis_core.models.outputs) says whether a plugin
reading it sees feature maps, tokens or channels-last maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnvis_core.models.layers import LayerNotFound, default_layer
from nnvis_core.models.outputs import CHANNELS_LAST, TOKENS, LayoutError, output_layout


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str  # the module's class
    output: str  # what it gives: "map 64x8x8", "tokens 1+14x14 x768", "channels-last 7x7x768", "(1, 10)"
    default_for: str  # "layer=auto" when the layer parameters' auto means it, else ""


def describe_output(model: nn.Module, output: object, input_hw: tuple[int, int]) -> str:
    if not isinstance(output, torch.Tensor):
        return type(output).__name__
    shape = tuple(output.shape[1:])
    if output.dim() in (3, 4):
        try:
            layout = output_layout(model, output, input_hw)
        except LayoutError:
            return str(tuple(output.shape))
        if layout.kind == TOKENS:
            h, w = layout.grid or (0, 0)
            return f"tokens {layout.prefix}+{h}x{w} x{shape[-1]}"
        if layout.kind == CHANNELS_LAST:
            return f"channels-last {shape[0]}x{shape[1]}x{shape[2]}"
        return f"map {shape[0]}x{shape[1]}x{shape[2]}"
    return str(tuple(output.shape))


def layer_rows(model: nn.Module, input_hw: tuple[int, int]) -> list[LayerRow]:
    """Every named layer, in definition order, with its output for a blank (1, 3, H, W) image."""
    outputs: dict[str, object] = {}
    names = {module: name for name, module in model.named_modules() if name}
    handles = [module.register_forward_hook(lambda m, args, out: outputs.setdefault(names[m], out))
               for module in names]
    parameter = next(model.parameters(), None)
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_hw, device=parameter.device if parameter is not None else "cpu"))
    finally:
        for handle in handles:
            handle.remove()
    try:
        auto = default_layer(model)
    except LayerNotFound:
        auto = ""
    return [LayerRow(name, type(module).__name__,
                     describe_output(model, outputs[name], input_hw) if name in outputs else "not run",
                     "layer=auto" if name == auto else "")
            for module, name in names.items()]
