"""Cascading randomization (Adebayo et al. 2018): the cascade, the plugin, and the published finding on
the trained demo model (its rank correlation and randomised layers are tested in
tests/core/metrics/test_metrics_randomisation.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnvis_core import Chart, Image, Table
from nnvis_core.demo import DemoNet
from nnvis_core.demo.model import WEIGHTS_PATH
from nnvis_core.toolkit import FAITHFULNESS_STEPS, TARGET, AttributionPlugin, Explanation, model_state
from nnvis_plugins.attribution import sanity


def test_measured_levels_are_spread_and_end_at_full_randomization():
    assert sanity.measured_levels(5, 12) == [1, 2, 3, 4, 5]
    levels = sanity.measured_levels(22, 6)
    assert levels[0] == 1 and levels[-1] == 22 and len(levels) == 6


def test_cascade_leaves_the_model_alone_and_randomizes_from_the_top():
    torch.manual_seed(0)
    model = DemoNet().eval()
    before = model_state(model)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 64, 64)
    cascade = sanity.cascading_randomization(model, x, [0, 1], ["gradient", "guided_backprop", "gradcam"],
                                             max_levels=4, options={"samples": 2})
    assert model_state(model) == before
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert cascade.levels[0] == "trained" and cascade.levels[1] == "classifier.2" and cascade.levels[-1] == "features.0"
    assert len(cascade.levels) == 5
    for values in cascade.correlations.values():
        assert values.shape == (5, 2)
        assert np.allclose(values[0], 1.0)  # the trained map against itself


def test_the_cascade_compares_maps_by_the_similarity_chosen():
    """SSIM instead of Spearman (Adebayo et al.'s other measure): each value is the SSIM of that level's
    map with the trained one, 1 at the trained level."""
    from nnvis_core.metrics.randomisation import spearman, ssim

    torch.manual_seed(0)
    model = DemoNet().eval()
    x = torch.randn(2, 3, 64, 64)
    by = {name: sanity.cascading_randomization(model, x, [0, 1], ["gradient"], max_levels=3, similarity_name=name)
          for name in ("spearman", "ssim")}
    maps = by["ssim"].maps["gradient"]
    assert all(torch.equal(a, b) for a, b in zip(maps, by["spearman"].maps["gradient"]))  # the same cascade
    for measure, name in ((ssim, "ssim"), (spearman, "spearman")):
        expected = [[measure(maps[0][i].numpy(), level[i].numpy()) for i in range(2)] for level in maps]
        np.testing.assert_allclose(by[name].correlations["gradient"], expected, rtol=1e-12)
    assert np.allclose(by["ssim"].correlations["gradient"][0], 1.0)
    assert not np.allclose(by["ssim"].correlations["gradient"], by["spearman"].correlations["gradient"])


def demo_ctx_and_items(chosen: tuple[str, ...] = (), more_plugins: dict | None = None):
    """A random demo net's run context (the installed plugins and `more_plugins`; `chosen` as the run's
    plugins) and three random images."""
    from pathlib import Path

    from nnvis_core.contract.context import ImageItem, RunContext
    from nnvis_core.demo import CLASS_NAMES, DEMO_SPEC
    from nnvis_core.images import ImageRecord
    from nnvis_core.models.loaded import LoadedModel, Preprocess
    from nnvis_core.run.registry import load_registry

    torch.manual_seed(0)
    loaded = LoadedModel(DemoNet().eval(), "demo", "random", list(CLASS_NAMES),
                         Preprocess(None, None, DEMO_SPEC["mean"], DEMO_SPEC["std"]), "test")
    plugins = {name: reg.item for name, reg in load_registry().plugins.items()} if chosen else {}
    ctx = RunContext(loaded, torch.device("cpu"), batch_size=8, plugins={**plugins, **(more_plugins or {})},
                     chosen=chosen)
    items = []
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        tensor = loaded.preprocess.normalize(pixels)
        with torch.no_grad():
            probabilities = torch.softmax(loaded.module(tensor[None]), 1)[0]
        record = ImageRecord(i, Path(f"/x/{CLASS_NAMES[i]}/{i}.png"), f"{CLASS_NAMES[i]}/{i}.png", CLASS_NAMES[i])
        items.append(ImageItem(record, pixels, tensor, i, probabilities))
    return ctx, items


def run_sanity(ctx, items, given: dict):
    from nnvis_core.contract.artifacts import as_result
    from nnvis_core.contract.params import resolve_params

    plugin = sanity.SanityCheck()
    return as_result(plugin.run_dataset(ctx, items, resolve_params(plugin.name, plugin.params, given)))


def test_the_plugin_draws_a_chart_a_table_and_the_maps():
    ctx, items = demo_ctx_and_items()
    result = run_sanity(ctx, items, {"methods": "gradient,guided_backprop", "images": "2", "max_levels": "3"})
    chart, table, grid = result.artifacts
    assert isinstance(chart, Chart) and isinstance(table, Table) and isinstance(grid, Image)
    assert set(chart.series) == {"gradient", "guided_backprop"} and chart.x_ticks[0] == "trained"
    assert len(chart.x) == 4
    assert set(result.metrics) == {"gradient_final_spearman", "guided_backprop_final_spearman"}
    assert "Spearman" in table.title and "MPRT" in table.title


def test_with_ssim_the_metrics_say_so_and_the_leaderboard_gives_no_verdict():
    """The leaderboard's pass (below 0.5) is defined for rank correlation; an SSIM is not read as one."""
    from nnvis_reports.leaderboard import sanity_by_method

    ctx, items = demo_ctx_and_items()
    result = run_sanity(ctx, items, {"methods": "gradient", "images": "2", "max_levels": "2", "similarity": "ssim"})
    assert set(result.metrics) == {"gradient_final_ssim"} and result.artifacts[1].title.startswith("SSIM")
    assert sanity_by_method({"dataset": {"sanity_check": {"status": "ok", "metrics": result.metrics}}}) == {}


def test_run_stands_for_the_defaults_and_the_runs_other_attribution_plugins():
    assert sanity.expand_run(["run"], []) == list(sanity.DEFAULT_METHODS)
    # saliency is the built-in gradient; gradcam is a default already; a name given first keeps its place
    assert sanity.expand_run(["xgradcam", "run"], ["saliency", "gradcam", "xgradcam", "eigencam"]) == [
        "xgradcam", *sanity.DEFAULT_METHODS, "eigencam"]
    assert sanity.SanityCheck.params[0].default == "run"


class Refusing(AttributionPlugin):
    """An attribution method that refuses every model, as a layer method does on a model without its layer."""

    name = "refusing"
    title = "Refusing"
    description = "Refuses."
    params = (TARGET, FAITHFULNESS_STEPS)

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        raise ValueError("no layer of this model fits")


def test_by_default_every_attribution_plugin_of_the_run_that_applies_is_checked():
    """The leaderboard's rank correlation for every method it lists: the run's methods join the defaults;
    one that does not apply to the model (AttnLRP on a convnet) is not tried, and one that fails on the
    trained model is left out with its reason instead of failing the check."""
    ctx, items = demo_ctx_and_items(("saliency", "xgradcam", "attnlrp", "refusing", "sanity_check"),
                                    {"refusing": Refusing()})
    result = run_sanity(ctx, items, {"images": "2", "max_levels": "1", "samples": "2", "steps": "2"})
    assert set(result.metrics) == {f"{m}_final_spearman" for m in (*sanity.DEFAULT_METHODS, "xgradcam")}
    table = result.artifacts[1]
    assert table.caption == "refusing left out: no layer of this model fits"
    with pytest.raises(ValueError, match="no layer of this model fits"):  # named by the user: an error
        run_sanity(ctx, items, {"methods": "gradient,refusing", "images": "2", "max_levels": "1"})


def test_unknown_methods_are_a_parameter_error():
    """A name is checked against the built-in methods and the installed attribution plugins
    (third-party ones included) before the run: Plugin.check_params."""
    from nnvis_core.contract.params import ParamError, resolve_params
    from nnvis_core.run.registry import load_registry

    with pytest.raises(ParamError, match="name at least one method"):
        resolve_params("sanity_check", sanity.SanityCheck.params, {"methods": " , "})
    params = resolve_params("sanity_check", sanity.SanityCheck.params, {"methods": "gradient,lime"})
    installed = {name: reg.item for name, reg in load_registry().plugins.items()}
    with pytest.raises(ValueError, match="lime is neither a built-in method nor an installed attribution plugin"):
        sanity.SanityCheck().check_params(params, installed)
    sanity.SanityCheck().check_params({**params, "methods": "gradient,occlusion"}, installed)


@pytest.mark.skipif(not WEIGHTS_PATH.is_file(), reason="trained demo weights not built yet")
def test_the_published_finding_shows_on_the_trained_demo_model():
    """Adebayo et al.: the gradient (and SmoothGrad) decorrelates as the top layers are randomized;
    guided backprop largely does not (it keeps showing the input's edges)."""
    from nnvis_core.demo import load_demo_model
    from nnvis_core.demo.model import normalize
    from nnvis_core.demo.shapes import generate_dataset

    model = load_demo_model()
    images, _, _ = generate_dataset(6, seed=11)
    x = normalize(images)
    with torch.no_grad():
        targets = model(x).argmax(1)
    cascade = sanity.cascading_randomization(model, x, targets, ["gradient", "smoothgrad", "guided_backprop"],
                                             options={"samples": 8})
    top_half = slice(1, 1 + (len(cascade.levels) - 1) // 2)  # randomizing the classifier and the top convs
    mean = {m: float(c[top_half].mean()) for m, c in cascade.correlations.items()}
    assert mean["guided_backprop"] > 0.75, mean
    assert mean["gradient"] < mean["guided_backprop"] - 0.2, mean
    assert mean["smoothgrad"] < mean["guided_backprop"] - 0.2, mean


def test_attention_in_projections_are_randomized_like_any_weighted_layer():
    """nn.MultiheadAttention holds q, k, v projections in its own parameters, not in a Linear."""
    from nnvis_core.metrics.randomisation import reinitialise, weighted_layers
    from nnvis_core.torchvision_compat import torchvision_models

    torch.manual_seed(0)
    model = torchvision_models().VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                   hidden_dim=16, mlp_dim=32, num_classes=4)
    names = weighted_layers(model)
    attention = "encoder.layers.encoder_layer_1.self_attention"
    assert names.index(attention) < names.index(f"{attention}.out_proj")  # randomized after its out_proj
    module = model.get_submodule(attention)
    before = module.in_proj_weight.detach().clone()
    reinitialise(module)
    assert not torch.allclose(before, module.in_proj_weight)
