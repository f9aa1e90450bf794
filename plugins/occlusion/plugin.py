"""The occlusion plugin: Zeiler & Fergus's figure 7 (b), (d) and (e) for every image, and the
probability drop as an attribution map scored like the others (deletion/insertion AUC, mask share)."""

from __future__ import annotations

import numpy as np
import torch

from nnvis_core import CategoricalMap, Heatmap, Param, hookimpl
from nnvis_core.toolkit import (
    FAITHFULNESS_STEPS,
    LAYER_KEYWORDS,
    LAYER_PARAM_HELP,
    TARGET,
    AttributionPlugin,
    Explanation,
    LayerNotFound,
)
from nnvis_plugins.occlusion.method import ENGINES, MEMORY_MB, THRESHOLD, occlusion_maps
from nnvis_plugins.occlusion.windows import OCCLUDERS, grey


def _fill(kind: str, preprocess) -> str | torch.Tensor:
    return grey(preprocess.mean, preprocess.std) if kind == "grey" else kind


class Occlusion(AttributionPlugin):
    name = "occlusion"
    title = "Occlusion sensitivity"
    description = (
        "Zeiler & Fergus (2014): a square slides over the image and the model is run with each position "
        "covered. Shown: the target probability drop per pixel (the attribution map, as Captum's Occlusion), "
        "the target probability and the most probable class with the square centred at each point, and the "
        "total activation of the feature map that is strongest in the unoccluded image. Exact incremental "
        "inference (Nakandala et al. 2019) recomputes each layer only where the square can reach; the caption "
        "says which engine ran and why."
    )
    label = "probability drop"
    params = (
        TARGET,
        Param("window", int, 0, "side of the square in pixels; 0 = 1/7 of the image's shorter side", minimum=0),
        Param("stride", int, 0, "step between positions in pixels, at most the window; 0 = the largest step "
              "that gives at least 16 positions per side", minimum=0),
        Param("occluder", str, "grey", "what fills the square: grey (mid-grey), mean (the image's mean colour), "
              "blur (the image blurred, sigma = window/4) or zero (0 after normalization)", choices=OCCLUDERS),
        Param("layer", str, "auto", "layer of the feature-map panel; " + LAYER_PARAM_HELP),
        Param("channel", int, -1, "feature map of that layer; -1 = the strongest in the unoccluded image", minimum=-1),
        Param("engine", str, "auto", "incremental (recompute only what the square reaches), batched (whole "
              "occluded images), auto (incremental where its traced plan reuses enough work, else batched), "
              f"approximate (opt-in: projective-field thresholding at {THRESHOLD:g}, faster, with its error "
              "against exact inference in the caption)", choices=ENGINES),
        Param("memory_mb", int, MEMORY_MB, "memory one batch of positions may use, in MiB", minimum=1),
        FAITHFULNESS_STEPS,
    )

    def default_layers(self, model) -> list[str]:
        """The feature-map panel's layer, or none: occlusion itself needs no layer, so a model
        without a readable one gets the maps without the panel, not a refusal."""
        try:
            return super().default_layers(model)
        except (LayerNotFound, ValueError):
            return []

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        maps = occlusion_maps(
            ctx.module, inputs, target,
            window=params["window"] or None, stride=params["stride"] or None,
            occluder=_fill(params["occluder"], ctx.model.preprocess),
            layer=params["layer"], channel=None if params["channel"] < 0 else params["channel"],
            engine=params["engine"], memory_mb=params["memory_mb"],
            panel_optional=params["layer"] in LAYER_KEYWORDS,  # a layer the user named must be read
        )
        names = ctx.class_names
        w = maps.windows
        caption = (f"{params['occluder']} {w.window}x{w.window} square, stride {w.stride}, {w.count} positions, "
                   + maps.describe_engine() + (f"; {maps.panel_note}" if maps.panel_note else ""))
        artifacts = [
            Heatmap(f"{self.name}: P({names[target]})", maps.pixels(maps.probability), value_range=(0.0, 1.0),
                    label=f"P({names[target]})",
                    caption=f"probability of {names[target]} with the square centred at each point "
                            f"(unoccluded: {maps.base_probability:.3f})"),
        ]
        top = maps.pixels(maps.top_class).astype(np.int64)
        artifacts.append(CategoricalMap(f"{self.name}: most probable class", top,
                                        {int(c): names[int(c)] for c in np.unique(top)},
                                        caption="the most probable class with the square centred at each point "
                                                f"(unoccluded: {names[maps.base_class]})"))
        if maps.feature is not None:
            artifacts.append(Heatmap(
                f"{self.name}: feature map {maps.channel} of {maps.layer}", maps.pixels(maps.feature),
                label="total activation",
                caption=f"total activation of feature map {maps.channel} of {maps.layer} (the strongest unoccluded, "
                        f"{maps.base_feature:.4g}) with the square centred at each point"))
        metrics = {
            "max_probability_drop": float(maps.drop.max()),
            "class_change_share": float((maps.top_class != maps.base_class).mean()),
        }
        if maps.deviation is not None:  # the approximate engine's error against exact inference
            metrics["approximate_max_abs_error"] = maps.deviation.max_abs
            metrics["approximate_relative_l2_error"] = maps.deviation.relative_l2
        return Explanation(torch.from_numpy(maps.drop_map()).float(), caption, artifacts, metrics)


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(Occlusion())
