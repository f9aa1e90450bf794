"""The feature_inversion plugin: what each depth of the network still keeps of the picture."""

from __future__ import annotations

from nnvis_core import Gallery, Image, Param, Plugin, Result, Scope, Table, hookimpl
from nnvis_plugins.synthesis.inversion import invert_features
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
from nnvis_plugins.synthesis.texture import as_picture


class FeatureInversion(Plugin):
    name = "feature_inversion"
    title = "Feature inversion"
    description = (
        "The image reconstructed from one layer's features alone, for several layers from shallow to deep "
        "(Mahendran & Vedaldi 2015): pixels optimized until their features match the input's, with a "
        "total-variation prior for what the features leave open. Early layers keep the picture; deep ones "
        "keep what the classifier needs. The table gives each reconstruction's remaining feature error and "
        "its pixel correlation with the input."
    )
    scope = Scope.IMAGE
    params = (
        Param("layers", str, "auto", "comma-separated layer names (see nnvis layers), or auto: the activation "
              f"outputs of {DEFAULT_COUNT} layers spread from the first conv to the last (blocks for ViT, Swin, "
              "ConvNeXt)"),
        steps_param(100),
        OPTIMIZER,
        Param("tv_weight", float, 0.05, "weight of the total-variation prior against the relative feature error",
              minimum=0.0, maximum=100.0),
        SEED,
        max_images_param(8),
    )

    def check_params(self, params, plugins) -> None:
        if not params["layers"].strip():
            raise ValueError("feature_inversion.layers: give auto or comma-separated layer names")

    def default_layers(self, model) -> list[str]:
        return parse_layers(model, "auto")

    def run_image(self, ctx, item, params) -> Result:
        skipped = beyond_cap(item, params)
        if skipped:
            return Result(skipped)
        layers = parse_layers(ctx.module, params["layers"])
        inversion = invert_features(ctx.module, model_normalizer(ctx), item_pixels(ctx, item), layers,
                                    params["steps"], params["optimizer"], params["tv_weight"], params["seed"])
        pictures = [as_picture(picture) for picture in inversion.pixels]
        labels = [f"{name} (r={corr:.2f})" for name, corr in zip(layers, inversion.correlations)]
        rows = [[name, round(error, 4), round(corr, 4)]
                for name, error, corr in zip(layers, inversion.errors, inversion.correlations)]
        curves = {name: inversion.curve[:, b].cpu().numpy() for b, name in enumerate(layers)}
        metrics = {f"feature_error:{name}": error for name, error in zip(layers, inversion.errors)}
        metrics.update({f"pixel_correlation:{name}": c for name, c in zip(layers, inversion.correlations)})
        metrics["feature_error_max"] = max(inversion.errors)
        return Result(
            [Image("input", item.pixels),
             Gallery("reconstructions, shallow to deep", pictures, labels=labels,
                     caption=f"{params['optimizer']}, {params['steps']} steps, tv_weight {params['tv_weight']}; "
                             "r = pixel correlation with the input"
                             + ("; a run's loss stopped being finite (the optimizer diverged): its picture is the "
                                "best finite one before" if inversion.diverged else "")),
             Table("what each layer keeps", ["layer", "relative feature error", "pixel correlation"], rows),
             loss_chart("reconstruction loss per layer", curves, "feature loss + prior")],
            metrics=metrics,
        )


@hookimpl
def nnvis_register_plugins(register):
    register(FeatureInversion())
