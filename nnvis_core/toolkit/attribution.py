"""The base of attribution methods: target, heatmap, faithfulness metrics, the model left as found.

A method subclasses :class:`AttributionPlugin`, declares :data:`TARGET` and
:data:`FAITHFULNESS_STEPS` among its params, and implements one step,
:meth:`AttributionPlugin.explain`, returning an :class:`Explanation`. The base
resolves the target, turns the attribution into the report's heatmap, adds
deletion/insertion AUC (Petsiuk et al. 2018) and, when the image has a
ground-truth mask, the mask share; it guarantees the model is left as it was
found; and it lets the sanity check (``sanity_check.methods=NAME``) recompute
the method's map on a randomized copy of the model (:meth:`AttributionPlugin.heatmap`).

    class Rise(AttributionPlugin):
        name, title, description = "rise", "RISE", "..."
        params = (TARGET, Param("masks", int, 2000, "random masks"), FAITHFULNESS_STEPS)

        def explain(self, ctx, item, inputs, target, params):
            return Explanation(my_map(ctx.module, inputs, target))   # (H, W) or (C, H, W)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from nnvis_core.contract.artifacts import Artifact, Chart, Heatmap, Result
from nnvis_core.contract.params import Param
from nnvis_core.contract.plugin import Plugin, Scope
from nnvis_core.models.layers import resolve_layer_name
from nnvis_core.toolkit.faithfulness import Curves, deletion_insertion, mask_share
from nnvis_core.toolkit.gradients import reduce_channels
from nnvis_core.toolkit.guard import preserved
from nnvis_core.toolkit.imaging import to_numpy
from nnvis_core.toolkit.maps import upsample_to_input

CURVES_TITLE = "deletion and insertion curves"

TARGET = Param("target", str, "predicted", "class to explain: predicted, true, an index or a class name")
FAITHFULNESS_STEPS = Param(
    "faithfulness_steps", int, 32,
    "points on the deletion/insertion curves (Petsiuk et al. 2018); 0 skips them", minimum=0, maximum=1024,
)
REDUCE = ("abs_max", "abs_sum", "sum", "l2")
LAYER_PARAM_HELP = ("the layer (named as in `nnvis layers`); auto = the rectified output of the last Conv2d "
                    "(its activation, or the block it ends, e.g. layer4 of a ResNet); "
                    "last_conv = the last Conv2d itself")


def curves_chart(curves: Curves, class_name: str) -> Chart:
    """The deletion and insertion curves behind the AUCs, as the card's chart (the report also
    averages them per method: nnvis_reports.curves finds them by their two series' names)."""
    last = len(curves.fractions) - 1
    ticks = [f"{x:.0%}" if i in (0, last // 2, last) else "" for i, x in enumerate(curves.fractions)]
    return Chart(CURVES_TITLE, [float(x) for x in curves.fractions],
                 {"deletion": [float(y) for y in curves.deletion], "insertion": [float(y) for y in curves.insertion]},
                 x_label="share of pixels turned black (deletion) or revealed on a blurred copy (insertion), "
                         "most important first",
                 y_label=f"probability of {class_name}", x_ticks=ticks,
                 caption="the lower the deletion curve and the higher the insertion curve, the more faithful the map")


def layer_name(ctx, name: str) -> str:
    """The layer a plugin's `layer` parameter names, with 'auto' and 'last_conv' resolved for this model."""
    return resolve_layer_name(ctx.module, name)


def reduce_param(default: str) -> Param:
    """The `reduce` parameter: how a (C, H, W) attribution becomes the card's (H, W) map."""
    return Param("reduce", str, default, "how colour channels become one map: abs_max, abs_sum, sum (signed) or l2",
                 choices=REDUCE)


@dataclass
class Explanation:
    """What a method computed for one image."""

    attribution: torch.Tensor  # (C, H, W) over the input, or (H, W) already one map
    caption: str = ""
    artifacts: list[Artifact] = field(default_factory=list)  # extra pictures after the main map
    metrics: dict[str, float] = field(default_factory=dict)
    # For a method whose (C, H, W) attribution promises to add up (completeness, scored by the trust
    # metric of that name): the (1, C, H, W) input its total is measured from (sum = f(x) - f(that)),
    # or "score" when the total should be f(x) itself (LRP). None: no such promise.
    completes_from: torch.Tensor | str | None = None


class AttributionPlugin(Plugin):
    """Base of the per-image attribution plugins; subclasses implement `explain`."""

    scope = Scope.IMAGE
    label = "attribution"  # what the colour bar measures

    def explain(self, ctx, item, inputs: torch.Tensor, target: int, params: dict[str, Any]) -> Explanation:
        """The attribution of class `target` for `inputs` (1, C, H, W), the image `item` on ctx's model."""
        raise NotImplementedError

    def check_declaration(self) -> None:
        names = {param.name for param in self.params}
        missing = [
            f"attribution plugin {self.name} declares no '{param.name}' parameter ({purpose}): add "
            f"nnvis_core.toolkit.{'TARGET' if param is TARGET else 'FAITHFULNESS_STEPS'} to its params"
            for param, purpose in ((TARGET, "the class to explain"),
                                   (FAITHFULNESS_STEPS, "the deletion/insertion metrics"))
            if param.name not in names
        ]
        if missing:  # both at once: an author fixes the declaration in one round
            raise ValueError("; ".join(missing))

    def _heat(self, attribution: torch.Tensor, params: dict[str, Any],
              size: tuple[int, int]) -> tuple[torch.Tensor, bool]:
        """(H, W) map of an attribution at the input's `size` (a layer-sized map is upsampled), and
        whether it is signed."""
        attribution = attribution.detach()
        how = params.get("reduce", "sum")
        heat = attribution if attribution.dim() == 2 else reduce_channels(attribution, how)
        heat = upsample_to_input(heat, size)
        return heat, attribution.dim() == 3 and how == "sum" or bool(heat.min() < 0)

    def _trust_metrics(self, ctx, item, inputs, target, params, heat, explanation, black):
        """({metric: value}, {metric: why it failed}) for the run's trust metrics on this map (scored by
        ctx.score_map, nnvis_core.metrics). Metrics that recompute the map call `recompute` with another
        input, class or model: the method's own `explain`, so a third party's method is scored exactly like
        a built-in. A method that reads the image from `item.pixels` rather than from `inputs` sees the
        original image there."""
        if not ctx.metrics or ctx.score_map is None:
            return {}, {}
        size = tuple(inputs.shape[-2:])

        def recompute(x: torch.Tensor, other: int, model: torch.nn.Module) -> np.ndarray:
            work = ctx if model is ctx.module else dataclasses.replace(
                ctx, model=dataclasses.replace(ctx.model, module=model))
            attribution = self.explain(work, item, x, int(other), params).attribution
            return to_numpy(self._heat(attribution, params, size)[0]).astype(np.float64)

        raw = explanation.attribution.detach()
        promised = explanation.completes_from is not None and raw.dim() == 3 and tuple(raw.shape[-2:]) == size
        mask = item.mask if item.mask is not None and item.mask.shape == size else None
        return ctx.score_map(
            ctx.metrics, model=ctx.module, inputs=inputs, target=target,
            attribution=to_numpy(heat).astype(np.float64), explain=recompute,
            mask=None if mask is None else np.asarray(mask) > 0,
            baseline=black[None].to(inputs),
            raw=to_numpy(raw).astype(np.float64) if promised else None,
            completes_from=explanation.completes_from if promised else None,
            seed=ctx.seed, batch_size=ctx.batch_size, classes=len(ctx.class_names))

    def heatmap(self, ctx, item, target: int, params: dict[str, Any]) -> torch.Tensor:
        """The (H, W) map the card shows for class `target`, without metrics or extra pictures.

        The sanity check calls it with a ctx whose model is a randomized copy.
        """
        inputs = ctx.input(item)
        with preserved(ctx.module):
            return self._heat(self.explain(ctx, item, inputs, target, params).attribution, params,
                              tuple(inputs.shape[-2:]))[0]

    def run_image(self, ctx, item, params) -> Result:
        target = ctx.target(item, params["target"])
        inputs = ctx.input(item)
        with preserved(ctx.module):
            explanation = self.explain(ctx, item, inputs, target, params)
            heat, signed = self._heat(explanation.attribution, params, tuple(inputs.shape[-2:]))
            metrics = dict(explanation.metrics)  # the target class is in the caption: a mean class index means nothing
            steps = params.get("faithfulness_steps", 0)
            curves = None
            black = ctx.model.preprocess.normalize(item.pixels * 0)  # the deleted pixels' value, as the model sees it
            if steps:
                curves = deletion_insertion(ctx.module, inputs, target, heat, black, steps, ctx.batch_size)
                metrics["deletion_auc"] = curves.deletion_auc
                metrics["insertion_auc"] = curves.insertion_auc
            trusted, untrusted = self._trust_metrics(ctx, item, inputs, target, params, heat, explanation, black)
            metrics.update(trusted)
        heat_np = to_numpy(heat)
        if item.mask is not None and item.mask.shape == heat_np.shape:
            metrics.update(mask_share(heat_np, item.mask))
        caption = f"towards {ctx.class_names[target]}" + (f"; {explanation.caption}" if explanation.caption else "")
        if untrusted:
            caption += "; not scored: " + ", ".join(f"{name} ({why})" for name, why in untrusted.items())
        label = self.label + (" (signed)" if signed else "")
        artifacts = [Heatmap(self.name, heat_np, signed=signed, label=label, caption=caption)]
        extra = [curves_chart(curves, ctx.class_names[target])] if curves is not None else []
        return Result(artifacts + explanation.artifacts + extra, metrics)
