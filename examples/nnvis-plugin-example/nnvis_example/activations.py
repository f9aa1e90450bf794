"""`mean-activations`: how strongly each layer responds to an image.

Forward hooks record, for every activation layer (or every convolution), the
mean of its output and the fraction of its units that are positive. A layer
whose fraction is near zero on most images is mostly dead; one whose mean
grows with depth is what a healthy ReLU network looks like.
"""

from __future__ import annotations

import torch
from torch import nn

from nnvis_core import Chart, Param, Plugin, Result, Scope, Table, hookimpl

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Hardswish, nn.Sigmoid, nn.Tanh)
LAYER_KINDS = {"activations": ACTIVATIONS, "convolutions": (nn.Conv2d,)}


def layer_statistics(model: nn.Module, inputs: torch.Tensor,
                     kinds: tuple[type, ...]) -> list[tuple[str, str, float, float]]:
    """(layer name, type, mean output, fraction of positive outputs) for each matching layer, in call order.

    The hooks are removed whether or not the forward pass succeeds.
    """
    rows: list[tuple[str, str, float, float]] = []

    def record(name: str):
        def hook(module: nn.Module, args, output: torch.Tensor) -> None:
            output = output.detach().float()
            rows.append((name, type(module).__name__, output.mean().item(), (output > 0).float().mean().item()))
        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in model.named_modules()
               if isinstance(module, kinds)]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return rows


class MeanActivations(Plugin):
    name = "mean-activations"
    title = "Mean activation per layer"
    description = (
        "For each activation layer (or each convolution), the mean of its output on this image and the "
        "fraction of its units that are positive, in the order the layers run."
    )
    scope = Scope.IMAGE
    params = (
        Param("layers", str, "activations", "which layers to measure", choices=tuple(LAYER_KINDS)),
        Param("decimals", int, 4, "digits after the point in the table", minimum=0, maximum=8),
    )

    def run_image(self, ctx, item, params):
        rows = layer_statistics(ctx.module, ctx.input(item), LAYER_KINDS[params["layers"]])
        if not rows:
            raise ValueError(f"the model has no {params['layers']} layers to measure")
        digits = params["decimals"]
        table = Table("mean activation per layer", ["layer", "type", "mean", "fraction > 0"],
                      [[name, kind, round(mean, digits), round(active, digits)] for name, kind, mean, active in rows])
        chart = Chart("by depth", list(range(len(rows))),
                      {"mean": [r[2] for r in rows], "fraction > 0": [r[3] for r in rows]},
                      x_label="layer", x_ticks=[r[0] for r in rows])
        return Result([table, chart], metrics={"fraction_active": sum(r[3] for r in rows) / len(rows)})


@hookimpl
def nnvis_register_plugins(register):
    register(MeanActivations())
