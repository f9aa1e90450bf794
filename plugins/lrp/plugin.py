"""The `lrp` plugin: layer-wise relevance propagation of the target logit, one composite per run.

    nnvis report images/ --model resnet50 --plugins lrp --set lrp.composite=epsilon-plus-flat
    nnvis report images/ --plugins lrp --set lrp.rules="conv=gamma,first=flat"

>>> from nnvis_plugins.lrp import plugin
>>> maps = plugin.attribute(model, images, target=3)     # (N, C, H, W), signed
"""

from __future__ import annotations

from nnvis_core import Param, hookimpl
from nnvis_core.toolkit import FAITHFULNESS_STEPS, TARGET, AttributionPlugin, Explanation, reduce_param
from nnvis_plugins.lrp.composites import COMPOSITES, LAYER_KEYS, composite, overrides_problem
from nnvis_plugins.lrp.propagate import attribute, box_bounds
from nnvis_plugins.lrp.rules import RULE_NAMES

__all__ = ["LRP", "attribute", "box_bounds"]


class LRP(AttributionPlugin):
    name = "lrp"
    title = "Layer-wise relevance propagation"
    description = (
        "Bach et al. (2015), Montavon et al. (2019): the target logit handed down layer by layer, each layer "
        "sharing its relevance among its inputs by an LRP rule (a composite chooses them: z-box or flat on the "
        "first layer, gamma, z-plus or alpha-beta on convolutions, epsilon on Linear layers), on a copy with "
        "BatchNorm merged into the layer before it and ResNet sums split in proportion. The map sums to about "
        "the logit. Signed: red supports the class. The same maps as Zennit's (docs/lrp.md)."
    )
    label = "relevance"
    params = (
        TARGET,
        Param("composite", str, "epsilon-gamma-box", "the rules per layer type, as Zennit's presets (docs/lrp.md)",
              choices=tuple(COMPOSITES)),
        Param("rules", str, "", f"overrides, KEY=RULE,... with KEY one of {', '.join(LAYER_KEYS)} (first=none: "
              f"no special first layer) and RULE one of {', '.join(RULE_NAMES)}", check=overrides_problem),
        Param("epsilon", float, 1e-6, "the epsilon rule's stabilizer (larger: only the strongest evidence)",
              minimum=0.0),
        Param("gamma", float, 0.25, "the gamma rule's favour to positive contributions", minimum=0.0),
        reduce_param("sum"),
        FAITHFULNESS_STEPS,
    )

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        preprocess = ctx.model.preprocess
        relevance = attribute(ctx.module, inputs, target, composite=params["composite"], rules=params["rules"],
                              epsilon=params["epsilon"], gamma=params["gamma"],
                              bounds=box_bounds(preprocess.mean, preprocess.std))
        plan = composite(params["composite"], params["rules"])
        first = f"first layer {plan.first}, " if plan.first else ""
        caption = (f"{params['composite']}: {first}conv {plan.conv}, linear {plan.linear}; "
                   f"relevance sums to {float(relevance.sum()):.3g}")
        return Explanation(relevance[0], caption, completes_from="score")  # relevance is conserved from the logit


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(LRP())
