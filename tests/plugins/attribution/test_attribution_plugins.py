"""Conformance of every attribution plugin, through the plugin contract (Captum's test_config
idea: to test a new method, add its plugin to the registry and it runs through this list)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nnvis_core import Heatmap, Result, Scope
from nnvis_core.contract.artifacts import as_result
from nnvis_core.contract.context import ImageItem, RunContext
from nnvis_core.contract.params import resolve_params
from nnvis_core.demo import CLASS_NAMES, DEMO_SPEC, DemoNet
from nnvis_core.images import ImageRecord
from nnvis_core.models.loaded import LoadedModel, Preprocess
from nnvis_core.run.registry import load_registry
from nnvis_core.toolkit import model_state

ATTRIBUTION = ("deconvnet", "guided_backprop", "smoothgrad", "integrated_gradients", "gradcam", "guided_gradcam",
               "gradient_x_input", "occlusion")
FAST = {"smoothgrad": {"samples": 4}, "integrated_gradients": {"steps": 6}}


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture(scope="module")
def ctx():
    torch.manual_seed(0)
    model = DemoNet().eval()
    preprocess = Preprocess(None, None, DEMO_SPEC["mean"], DEMO_SPEC["std"])
    loaded = LoadedModel(model, "demo", "random", list(CLASS_NAMES), preprocess, "test")
    return RunContext(loaded, torch.device("cpu"), seed=0, batch_size=8)


def make_item(ctx, index: int = 0, with_mask: bool = True) -> ImageItem:
    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    tensor = ctx.model.preprocess.normalize(pixels)
    with torch.no_grad():
        probabilities = torch.softmax(ctx.module(tensor[None]), 1)[0]
    mask = np.zeros((64, 64), bool)
    mask[16:40, 20:44] = True
    relative = f"{CLASS_NAMES[1]}/{index}.png"
    record = ImageRecord(index, Path(f"/x/{relative}"), relative, CLASS_NAMES[1])
    return ImageItem(record, pixels, tensor, 1, probabilities, mask if with_mask else None)


def run(registry, ctx, name, item, **given):
    plugin = registry.plugins[name].item
    params = resolve_params(name, plugin.params, {**FAST.get(name, {}), **given})
    torch.manual_seed(ctx.seed_for(item, name))  # as the runner does
    return as_result(plugin.run_image(ctx, item, params))


def test_all_are_registered_per_image_plugins(registry):
    for name in ATTRIBUTION:
        assert name in registry.plugins, name
        assert registry.plugins[name].item.scope is Scope.IMAGE
    assert registry.plugins["sanity_check"].item.scope is Scope.DATASET


@pytest.mark.parametrize("name", ATTRIBUTION)
def test_conformance(registry, ctx, name):
    item = make_item(ctx)
    before = model_state(ctx.module)
    result = run(registry, ctx, name, item)
    assert isinstance(result, Result)
    heatmap = result.artifacts[0]
    assert isinstance(heatmap, Heatmap) and heatmap.values.shape == (64, 64)
    assert np.isfinite(heatmap.values).all() and np.abs(heatmap.values).sum() > 0
    metrics = result.metrics
    for key in ("deletion_auc", "insertion_auc", "mask_share", "mask_area", "mask_gain"):
        assert key in metrics, key
    assert 0 <= metrics["deletion_auc"] <= 1 and 0 <= metrics["insertion_auc"] <= 1
    assert metrics["mask_area"] == pytest.approx(24 * 24 / 64 / 64)
    assert heatmap.caption.startswith(f"towards {CLASS_NAMES[item.predicted]}")
    # the model is left exactly as found, and the result is reproducible
    assert model_state(ctx.module) == before
    assert all(p.grad is None for p in ctx.module.parameters())
    again = run(registry, ctx, name, item)
    assert np.array_equal(again.artifacts[0].values, heatmap.values)


@pytest.mark.parametrize("name", ["guided_backprop", "gradcam"])
def test_targets_true_index_and_name(registry, ctx, name):
    item = make_item(ctx, 1, with_mask=False)
    for spec, expected in (("true", 1), ("3", 3), (CLASS_NAMES[2], 2)):
        result = run(registry, ctx, name, item, target=spec, faithfulness_steps=0)
        assert result.artifacts[0].caption.startswith(f"towards {CLASS_NAMES[expected]}")
        assert "deletion_auc" not in result.metrics and "mask_share" not in result.metrics


@pytest.mark.parametrize("name", ["deconvnet", "guided_backprop"])
def test_feature_mode(registry, ctx, name):
    item = make_item(ctx, 2)
    result = run(registry, ctx, name, item, mode="feature", faithfulness_steps=0)
    assert "projection of channel" in result.artifacts[0].caption
    chosen = run(registry, ctx, name, item, mode="feature", channel=5, layer="features.3", faithfulness_steps=0)
    assert "channel 5 of features.3" in chosen.artifacts[0].caption


@pytest.mark.parametrize("options", [{"base": "guided_backprop", "variant": "squared"},
                                     {"base": "integrated_gradients", "steps": 3, "samples": 2}])
def test_smoothgrad_bases(registry, ctx, options):
    result = run(registry, ctx, "smoothgrad", make_item(ctx, 3), faithfulness_steps=4, **options)
    assert np.isfinite(result.artifacts[0].values).all()


@pytest.mark.parametrize("baseline", ["black", "blur", "noise"])
def test_integrated_gradients_reports_its_completeness_gap(registry, ctx, baseline):
    result = run(registry, ctx, "integrated_gradients", make_item(ctx, 4), baseline=baseline, faithfulness_steps=0)
    metrics = result.metrics
    assert {"completeness_gap", "completeness_gap_relative", "score_change"} <= set(metrics)
    assert metrics["completeness_gap"] >= 0
    assert result.artifacts[0].signed


def test_a_failing_plugin_leaves_the_model_untouched(registry, ctx):
    item = make_item(ctx)
    before = model_state(ctx.module)
    with pytest.raises(Exception, match="no layer named"):
        run(registry, ctx, "gradcam", item, layer="features.99")
    with pytest.raises(Exception, match="channels"):
        run(registry, ctx, "guided_backprop", item, mode="feature", channel=10_000)
    assert model_state(ctx.module) == before


def test_unsupported_activations_fail_with_the_module_names(registry):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Tanh(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, len(CLASS_NAMES))).eval()
    preprocess = Preprocess(None, None, DEMO_SPEC["mean"], DEMO_SPEC["std"])
    tanh_ctx = RunContext(LoadedModel(model, "tanh", "random", list(CLASS_NAMES), preprocess, "test"),
                          torch.device("cpu"))
    with pytest.raises(TypeError, match=r"1 \(Tanh\)"):
        run(registry, tanh_ctx, "guided_backprop", make_item(tanh_ctx))
    assert run(registry, tanh_ctx, "integrated_gradients", make_item(tanh_ctx), faithfulness_steps=0)
