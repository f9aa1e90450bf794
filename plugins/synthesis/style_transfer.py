"""The style_transfer plugin: each image re-rendered in the style of one image the user names."""

from __future__ import annotations

from pathlib import Path

import torch

from nnvis_core import Image, Param, Plugin, Result, Scope, hookimpl
from nnvis_core.images import load_rgb
from nnvis_plugins.synthesis.layers import DEFAULT_COUNT, middle_layer, parse_layers
from nnvis_plugins.synthesis.options import (
    OPTIMIZER,
    beyond_cap,
    item_pixels,
    loss_chart,
    max_images_param,
    model_normalizer,
    steps_param,
)
from nnvis_plugins.synthesis.style import CONTENT_WEIGHT, STYLE_WEIGHT, transfer_style
from nnvis_plugins.synthesis.texture import as_picture

NO_STYLE = "needs a style image: --set style_transfer.style=PATH"


class StyleTransfer(Plugin):
    name = "style_transfer"
    title = "Style transfer"
    description = (
        "Each image re-rendered in the style of one given image (Gatys, Ecker & Bethge 2016): its own "
        "features kept at one layer, the style image's Gram matrices matched at several. Left out unless "
        "style=PATH is set."
    )
    scope = Scope.IMAGE
    params = (
        Param("style", str, "", "the style image (a file path); required"),
        Param("content_layer", str, "auto", "the layer whose features are kept (auto: halfway through)"),
        Param("style_layers", str, "auto", f"comma-separated layers, or auto: {DEFAULT_COUNT} activation outputs "
              "spread over the depth"),
        Param("content_weight", float, CONTENT_WEIGHT, "weight of the relative content loss", minimum=0.0),
        Param("style_weight", float, STYLE_WEIGHT, "weight of the relative Gram loss, summed over style layers",
              minimum=0.0),
        steps_param(100),
        OPTIMIZER,
        max_images_param(8),
    )

    def check_params(self, params, plugins) -> None:
        path = params["style"]
        if path and not Path(path).is_file():
            raise ValueError(f"style_transfer.style: {path}: no such file")

    def applies_with(self, ctx, params) -> str | None:
        return None if params["style"] else NO_STYLE

    def default_layers(self, model) -> list[str]:
        return [middle_layer(model), *parse_layers(model, "auto")]

    def run_image(self, ctx, item, params) -> Result:
        if not params["style"]:
            raise ValueError(NO_STYLE)
        skipped = beyond_cap(item, params)
        if skipped:
            return Result(skipped)
        model = ctx.module
        content_layer = middle_layer(model) if params["content_layer"] == "auto" else params["content_layer"]
        style_layers = parse_layers(model, params["style_layers"])
        style_picture = ctx.model.preprocess.display(load_rgb(Path(params["style"])))
        style = torch.from_numpy(style_picture).permute(2, 0, 1)[None].float().div(255).contiguous().to(ctx.device)
        result = transfer_style(model, model_normalizer(ctx), item_pixels(ctx, item), style, content_layer,
                                style_layers, params["content_weight"], params["style_weight"], params["steps"],
                                params["optimizer"])
        curve = result.curve[:, 0].cpu().numpy()
        return Result(
            [Image("content (input)", item.pixels),
             Image("style", style_picture, caption=Path(params["style"]).name),
             Image("stylized", as_picture(result.pixels[0]),
                   caption=f"content {content_layer}, style {', '.join(style_layers)}; weights "
                           f"{params['content_weight']}:{params['style_weight']}"
                           + (f"; {result.note()}" if result.diverged is not None else "")),
             loss_chart("style transfer loss", {"content + style loss": curve}, "loss")],
            metrics={"loss_start": float(curve[0]), "loss_end": float(curve[-1])},
        )


@hookimpl
def nnvis_register_plugins(register):
    register(StyleTransfer())
