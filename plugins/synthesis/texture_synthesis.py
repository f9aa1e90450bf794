"""The texture_synthesis plugin: the input's texture, as its Gram matrices keep it, grown from noise."""

from __future__ import annotations

from nnvis_core import Image, Param, Plugin, Result, Scope, hookimpl
from nnvis_plugins.synthesis.layers import DEFAULT_COUNT, parse_layers
from nnvis_plugins.synthesis.options import (
    OPTIMIZER,
    SEED,
    beyond_cap,
    item_pixels,
    loss_chart,
    max_images_param,
    model_normalizer,
    steps_param,
)
from nnvis_plugins.synthesis.texture import as_picture, synthesize_texture

LAYERS_HELP = ("comma-separated layer names (see nnvis layers), or auto: the activation outputs of "
               f"{DEFAULT_COUNT} layers spread from the first conv to the last (blocks for ViT, Swin, ConvNeXt)")


class TextureSynthesis(Plugin):
    name = "texture_synthesis"
    title = "Texture synthesis"
    description = (
        "A new image grown from noise until its Gram matrices (which channels fire together, averaged over "
        "positions) match the input's at several layers (Gatys, Ecker & Bethge 2015): what the network keeps "
        "of the image once the layout is thrown away. The chart shows the Gram loss falling."
    )
    scope = Scope.IMAGE
    params = (
        Param("size", int, 0, "side of the synthesized square in pixels (0 = the input's size)", minimum=0,
              maximum=2048),
        steps_param(200),
        OPTIMIZER,
        SEED,
        Param("layers", str, "auto", LAYERS_HELP),
        max_images_param(8),
    )

    def check_params(self, params, plugins) -> None:
        if not params["layers"].strip():
            raise ValueError("texture_synthesis.layers: give auto or comma-separated layer names")

    def default_layers(self, model) -> list[str]:
        return parse_layers(model, "auto")

    def run_image(self, ctx, item, params) -> Result:
        skipped = beyond_cap(item, params)
        if skipped:
            return Result(skipped)
        layers = parse_layers(ctx.module, params["layers"])
        source = item_pixels(ctx, item)
        size = (params["size"],) * 2 if params["size"] else None
        result = synthesize_texture(ctx.module, model_normalizer(ctx), source, layers, size, params["steps"],
                                    params["optimizer"], params["seed"])
        curve = result.curve[:, 0].cpu().numpy()
        drop = float(curve[0] / max(curve[-1], 1e-30))
        caption = f"{params['optimizer']}, {params['steps']} steps; layers {', '.join(layers)}"
        caption += f"; {result.note()}" if result.diverged is not None else ""
        return Result(
            [Image("input", item.pixels),
             Image("synthesized texture", as_picture(result.pixels[0]), caption=caption),
             loss_chart("Gram loss", {"Gram loss": curve}, "Gram loss")],
            metrics={"gram_loss_start": float(curve[0]), "gram_loss_end": float(curve[-1]), "loss_drop": drop},
        )


@hookimpl
def nnvis_register_plugins(register):
    register(TextureSynthesis())
