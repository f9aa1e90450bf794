"""`nnvis layers`: every layer of a model with what it outputs and which defaults pick it.

One no-grad pass of a blank image at the model's input size records each
layer's output; its layout (nnvis_core.models.outputs) says whether a plugin
reading it sees feature maps, tokens or channels-last maps. Each plugin's
`default_layers` says which layers it reads when the user names none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

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
    plugins: tuple[str, ...] = ()  # the plugins that read it when the user names no layer


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


def plugin_defaults(model: nn.Module, plugins: Mapping[str, Any]) -> dict[str, list[str]]:
    """{layer: names of the plugins that read it by default}, from each plugin's default_layers.

    A plugin whose defaults cannot be worked out on this model (no conv layer
    for `filters`, say) is left out: it would refuse the model in a run too.
    """
    readers: dict[str, list[str]] = {}
    for name, plugin in sorted(plugins.items()):
        try:
            layers = plugin.default_layers(model)
        except Exception:  # noqa: BLE001 - the plugin does not apply to this model
            continue
        for layer in dict.fromkeys(layers):
            readers.setdefault(layer, []).append(name)
    return readers


def layer_rows(model: nn.Module, input_hw: tuple[int, int],
               plugins: Mapping[str, Any] | None = None) -> list[LayerRow]:
    """Every named layer, in definition order, with its output for a blank (1, 3, H, W) image
    and, given the installed plugins by name, which of them read it by default."""
    outputs: dict[str, object] = {}
    names = {module: name for name, module in model.named_modules() if name}
    def record(module: nn.Module, args, output) -> None:  # returns None: the output is left as it is
        outputs.setdefault(names[module], output)  # the first call of a module called twice

    handles = [module.register_forward_hook(record) for module in names]
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
    readers = plugin_defaults(model, plugins or {})
    return [LayerRow(name, type(module).__name__,
                     describe_output(model, outputs[name], input_hw) if name in outputs else "not run",
                     "layer=auto" if name == auto else "", tuple(readers.get(name, ())))
            for module, name in names.items()]
