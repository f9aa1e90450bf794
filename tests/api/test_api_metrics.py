"""--metrics in a run: chosen by name, category or preset, scored on every attribution map (a third party's
too), averaged in the leaderboard, and checked before anything runs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import registry_with  # noqa: F401 - the fixtures' module, for Blank below

import nnvis
from nnvis_core.run.config import ConfigError, build_config
from nnvis_core.toolkit import FAITHFULNESS_STEPS, TARGET, AttributionPlugin, Explanation

QUIET = {"faithfulness_steps": 0}


def test_an_unknown_metric_is_a_one_line_error_naming_the_option(few_demo_images):
    with pytest.raises(ConfigError, match=r"^--metrics: 'pointy' is not a metric, a category") as caught:
        build_config(few_demo_images, metrics="sparseness,pointy")
    assert "\n" not in str(caught.value)
    assert build_config(few_demo_images, metrics=["localisation", "completeness"]).metrics == \
        "localisation,completeness"


def test_completeness_scores_only_the_methods_that_promise_it(few_demo_images):
    """Integrated Gradients, gradient x input and LRP add up (to the score's change from their baseline, or
    to the score); the gradient makes no such promise. IG's completeness equals its own completeness gap."""
    run = nnvis.run(few_demo_images, plugins=["saliency", "gradient_x_input", "integrated_gradients", "lrp"],
                    metrics="completeness,sparseness", progress=False, saliency=QUIET, gradient_x_input=QUIET,
                    integrated_gradients={**QUIET, "steps": 16}, lrp={**QUIET, "composite": "epsilon-plus"})
    for image in run.images:
        assert "completeness" not in run.result(image, "saliency").metrics
        assert "sparseness" in run.result(image, "saliency").metrics
        ig = run.result(image, "integrated_gradients").metrics
        assert ig["completeness"] == pytest.approx(ig["completeness_gap"], rel=1e-5, abs=1e-6)
        for name in ("gradient_x_input", "lrp"):
            assert run.result(image, name).metrics["completeness"] >= 0
    rows = {row["method"]: row for row in run.leaderboard}  # nnvis.Run exposes the rows
    assert rows["saliency"].get("completeness") is None
    assert rows["integrated_gradients"]["completeness"] == pytest.approx(
        np.mean([run.result(i, "integrated_gradients").metrics["completeness"] for i in run.images]))


class Brightness(AttributionPlugin):
    """A third party's method: the image's brightness, whatever the model; the map recomputed for another
    input follows that input."""

    name = "brightness"
    title = "Brightness"
    description = "The input's brightness."
    params = (TARGET, FAITHFULNESS_STEPS)

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        return Explanation(inputs[0].mean(0))


def test_a_third_party_method_is_scored_like_a_built_in(few_demo_images):
    """Robustness and randomisation recompute the map through the plugin's own explain: a map that ignores
    the model is perfectly insensitive to its randomisation (MPRT's similarity 1: the worst) and to the class."""
    run = nnvis.run(few_demo_images, plugins=[Brightness()], metrics="randomisation,max_sensitivity",
                    progress=False, brightness=QUIET)
    for image in run.images:
        metrics = run.result(image, "brightness").metrics
        assert metrics["mprt"] == pytest.approx(1.0)
        assert metrics["random_logit"] == pytest.approx(1.0)
        assert metrics["max_sensitivity"] > 0  # the input moved, so did its brightness


def test_none_scores_nothing(few_demo_images):
    from nnvis_core.metrics.suite import METRICS

    run = nnvis.run(few_demo_images, plugins=["saliency"], metrics="none", progress=False, saliency=QUIET)
    assert not {m.name for m in METRICS} & set(run.result(run.images[0], "saliency").metrics)
