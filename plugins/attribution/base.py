"""What every per-image attribution plugin shares: target, the heatmap, faithfulness metrics.

A method plugin subclasses :class:`AttributionPlugin` and implements one step,
:meth:`AttributionPlugin.explain`, returning an :class:`Explanation`; the base
turns it into the report's heatmap, adds deletion/insertion AUC and, when the
image has a ground-truth mask, the mask share, and guarantees the model is left
as it was found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from nnvis_core import Artifact, Heatmap, Param, Plugin, Result, Scope
from nnvis_plugins.attribution.backprop import default_layer, reduce_channels
from nnvis_plugins.attribution.faithfulness import deletion_insertion, mask_share
from nnvis_plugins.attribution.guard import preserved
from nnvis_plugins.attribution.imaging import to_numpy

TARGET = Param("target", str, "predicted", "class to explain: predicted, true, an index or a class name")
FAITHFULNESS_STEPS = Param(
    "faithfulness_steps", int, 32,
    "points on the deletion/insertion curves (Petsiuk et al. 2018); 0 skips them", minimum=0, maximum=1024,
)
REDUCE = ("abs_max", "abs_sum", "sum", "l2")
LAYER_PARAM_HELP = ("the layer (named as in `nnvis layers`); auto = the rectified output of the last Conv2d "
                    "(its activation, or the block it ends, e.g. layer4 of a ResNet); last_conv = the last Conv2d itself")


def layer_name(ctx, name: str) -> str:
    """The layer a plugin's `layer` parameter names, with 'auto' resolved for this model."""
    return default_layer(ctx.module) if name == "auto" else name


def reduce_param(default: str) -> Param:
    return Param("reduce", str, default, "how colour channels become one map: abs_max, abs_sum, sum (signed) or l2",
                 choices=REDUCE)


@dataclass
class Explanation:
    """What a method computed for one image."""

    attribution: torch.Tensor  # (C, H, W) over the input, or (H, W) already one map
    caption: str = ""
    artifacts: list[Artifact] = field(default_factory=list)  # extra pictures after the main map
    metrics: dict[str, float] = field(default_factory=dict)


class AttributionPlugin(Plugin):
    """Base of the per-image attribution plugins; subclasses implement `explain`."""

    scope = Scope.IMAGE
    label = "attribution"  # what the colour bar measures

    def explain(self, ctx, item, inputs: torch.Tensor, target: int, params: dict[str, Any]) -> Explanation:
        raise NotImplementedError

    def run_image(self, ctx, item, params) -> Result:
        target = ctx.target(item, params["target"])
        inputs = ctx.input(item)
        with preserved(ctx.module):
            explanation = self.explain(ctx, item, inputs, target, params)
            attribution = explanation.attribution.detach()
            how = params.get("reduce", "sum")
            heat = attribution if attribution.dim() == 2 else reduce_channels(attribution, how)
            signed = attribution.dim() == 3 and how == "sum" or bool(heat.min() < 0)
            metrics = dict(explanation.metrics)  # the target class is in the caption: a mean class index means nothing
            steps = params.get("faithfulness_steps", 0)
            if steps:
                black = ctx.model.preprocess.normalize(item.pixels * 0)
                curves = deletion_insertion(ctx.module, inputs, target, heat, black, steps, ctx.batch_size)
                metrics["deletion_auc"] = curves.deletion_auc
                metrics["insertion_auc"] = curves.insertion_auc
        heat_np = to_numpy(heat)
        if item.mask is not None and item.mask.shape == heat_np.shape:
            metrics.update(mask_share(heat_np, item.mask))
        caption = f"towards {ctx.class_names[target]}" + (f"; {explanation.caption}" if explanation.caption else "")
        label = self.label + (" (signed)" if signed else "")
        artifacts = [Heatmap(self.name, heat_np, signed=signed, label=label, caption=caption)]
        return Result(artifacts + explanation.artifacts, metrics)
