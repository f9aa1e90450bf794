"""The public method toolkit (nnvis_core.toolkit) and plugin API version 2: what a third-party
method gets is what the built-ins get, and a declaration that lacks something is caught early."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from conftest import registry_with
from torch import nn

from nnvis_core import Param, Plugin
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import check_plugin, load_registry
from nnvis_core.toolkit import (
    FAITHFULNESS_STEPS,
    TARGET,
    AttributionPlugin,
    Explanation,
    chunk_size,
    gradient,
    model_baseline,
    target_probabilities,
)
from nnvis_reports import build_report
from nnvis_reports.reader import read_report


class InputTimesGradient(AttributionPlugin):
    """A third-party method written only against the toolkit."""

    name = "third-party-ixg"
    title = "Input x gradient (third party)"
    description = "The input times the gradient of the class score, from the toolkit alone."
    params = (TARGET, FAITHFULNESS_STEPS)

    def explain(self, ctx, item, inputs, target, params):
        return Explanation((inputs * gradient(ctx.module, inputs, target))[0])


@pytest.mark.parametrize("missing, advice", [
    ("target", "add nnvis_core.toolkit.TARGET to its params"),
    ("faithfulness_steps", "add nnvis_core.toolkit.FAITHFULNESS_STEPS to its params"),
])
def test_an_attribution_plugin_without_target_or_faithfulness_steps_is_refused(missing, advice):
    incomplete = type("Incomplete", (InputTimesGradient,), {
        "name": "incomplete", "params": tuple(p for p in (TARGET, FAITHFULNESS_STEPS) if p.name != missing)})()
    with pytest.raises(ValueError, match=f"declares no '{missing}' parameter") as error:
        check_plugin(incomplete)
    assert advice in str(error.value)
    registry = registry_with(incomplete)
    assert "incomplete" not in registry.plugins
    assert any(f.name == "incomplete" and advice in f.error for f in registry.failures)


def test_a_version_1_plugin_still_registers_and_runs(few_demo_images, tmp_path):
    from nnvis_plugins.attribution.base import AttributionPlugin as OldBase  # where version 1 found it

    class OldStyle(OldBase):
        name = "old-style"
        title = "Old style"
        description = "Written against plugin API version 1."
        api_version = 1
        params = (TARGET, FAITHFULNESS_STEPS)

        def explain(self, ctx, item, inputs, target, params):
            return Explanation(gradient(ctx.module, inputs, target)[0].abs())

    assert OldBase is AttributionPlugin
    outcome = build_report(ReportConfig(few_demo_images, tmp_path / "out", plugins=["old-style"]),
                           registry_with(OldStyle()))
    assert outcome.exit_code == 0


def test_a_third_party_method_gets_metrics_the_summary_and_the_sanity_check(few_demo_images, tmp_path):
    out = tmp_path / "out"
    params = {"sanity_check": {"methods": "gradient_x_input,third-party-ixg", "images": 2, "max_levels": 3}}
    outcome = build_report(ReportConfig(few_demo_images, out, plugins=["third-party-ixg", "sanity_check"],
                                        params=params, masks=None), registry_with(InputTimesGradient()))
    assert outcome.exit_code == 0
    report = read_report(out)
    for image in report["images"]:
        metrics = image["results"]["third-party-ixg"]["metrics"]
        assert 0 <= metrics["deletion_auc"] <= 1 and 0 <= metrics["insertion_auc"] <= 1
    summary = next(p for p in report["plugins"] if p["name"] == "third-party-ixg")["metrics_summary"]
    assert summary["deletion_auc"]["n"] == 6
    sanity = report["dataset"]["sanity_check"]["metrics"]
    # The same mathematics as the built-in gradient_x_input, whose map the sanity check computes itself
    # (sum over colours, then absolute value): the randomization curves must agree.
    assert sanity["third-party-ixg_final_spearman"] == pytest.approx(sanity["gradient_x_input_final_spearman"],
                                                                     abs=1e-6)


def test_the_sanity_check_refuses_a_name_that_is_no_attribution_method(few_demo_images, tmp_path):
    from nnvis_core.run.plan import UsageError

    params = {"sanity_check": {"methods": "gradient,tsne"}}
    with pytest.raises(UsageError, match="tsne is neither a built-in method nor an installed attribution plugin"):
        build_report(ReportConfig(few_demo_images, tmp_path / "out", plugins=["sanity_check"], params=params),
                     load_registry())


def test_target_probabilities_do_not_depend_on_the_chunk():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    images = torch.randn(37, 3, 16, 16)
    with torch.no_grad():
        expected = torch.softmax(model(images), 1)[:, 2].double().numpy()
    for kwargs in ({"batch_size": 1}, {"batch_size": 7}, {"memory_mb": 1e-6}, {"memory_mb": 1e6}, {}):
        assert np.allclose(target_probabilities(model, images, 2, **kwargs), expected, atol=1e-6)
    per_image = [i % 5 for i in range(37)]
    with torch.no_grad():
        each = torch.softmax(model(images), 1)[torch.arange(37), per_image].double().numpy()
    assert np.allclose(target_probabilities(model, images, per_image, batch_size=4), each, atol=1e-6)


def test_the_chunk_follows_the_memory_budget_not_the_batch_size():
    assert chunk_size(2**20, memory_mb=64) == 64
    assert chunk_size(2**20, memory_mb=64, limit=10) == 10
    assert chunk_size(2**30, memory_mb=1) == 1


def test_baselines_are_in_the_models_input_space():
    preprocess = types.SimpleNamespace(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    inputs = torch.randn(2, 3, 8, 8)
    mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std).view(1, 3, 1, 1)
    assert torch.allclose(model_baseline("black", inputs, preprocess), (0 - mean) / std * torch.ones_like(inputs))
    assert torch.allclose(model_baseline("grey", inputs, preprocess), (0.5 - mean) / std * torch.ones_like(inputs))
    noise = model_baseline("noise", inputs, preprocess, torch.Generator().manual_seed(1)) * std + mean
    assert noise.min() >= 0 and noise.max() <= 1 and noise.std() > 0.2
    blur = model_baseline("blur", inputs, preprocess)
    assert blur.shape == inputs.shape and blur.std() < inputs.std()
    with pytest.raises(ValueError, match="unknown baseline 'pink'"):
        model_baseline("pink", inputs, preprocess)


def test_check_params_sees_every_installed_plugin(few_demo_images, tmp_path):
    seen = {}

    class Picky(Plugin):
        name = "picky"
        title = "Picky"
        description = "Accepts only the name of an installed plugin."
        params = (Param("other", str, "saliency", "an installed plugin"),)

        def check_params(self, params, plugins):
            seen.update(plugins)
            if params["other"] not in plugins:
                raise ValueError(f"picky.other: no plugin {params['other']}")

        def run_image(self, ctx, item, params):
            return []

    from nnvis_core.run.plan import UsageError

    with pytest.raises(UsageError, match="picky.other: no plugin nope"):
        build_report(ReportConfig(few_demo_images, tmp_path / "out", plugins=["picky"],
                                  params={"picky": {"other": "nope"}}), registry_with(Picky()))
    assert {"saliency", "occlusion", "picky"} <= set(seen)


def test_a_version_1_plugin_that_imports_a_moved_helper_is_told_where_it_went(fake_distribution):
    fake_distribution("nnvis-plugin-old", {"old": "oldplug"}, {"oldplug.py": """
        from nnvis_plugins.attribution.backprop import gradient
    """})
    [failure] = [f for f in load_registry().failures if f.name == "old"]
    assert "nnvis_plugins.attribution.backprop" in failure.error and "nnvis_core.toolkit" in failure.error


def test_exact_float32_turns_off_tf32_and_cudnn_autotuning_and_puts_the_flags_back():
    from nnvis_core.toolkit import exact_float32

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark)
    try:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark = True, True, False, True
        with exact_float32():
            assert (cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark) == (False, False, True,
                                                                                                    False)
        assert (cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark) == (True, True, False, True)
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark = saved


def test_a_run_computes_inside_exact_float32(monkeypatch, tmp_path):
    """The runner, not each plugin, asks for float32 as written: a plugin sees the flags set."""
    from nnvis_core import Plugin, Scope
    from nnvis_core.testing import check_plugin

    seen = []

    class Flags(Plugin):
        name = "flags"
        title = "Flags"
        description = "records cuDNN's flags during a call"
        scope = Scope.IMAGE

        def run_image(self, ctx, item, params):
            seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic))
            return []

    check_plugin(Flags(), images=1)
    assert seen and all(flags == (False, True) for flags in seen)


def test_forward_until_takes_a_layer_by_name_as_resolve_layer_does():
    from nnvis_core.toolkit import forward_until

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    inputs = torch.rand(2, 3, 8, 8)
    by_name = forward_until(model, "1", inputs)
    assert torch.equal(by_name, forward_until(model, model[1], inputs))
    assert torch.equal(forward_until(model, "last_conv", inputs), model[0](inputs))


def test_select_target_takes_lists_one_target_per_image():
    from nnvis_core.toolkit import AttributionError, select_target

    assert select_target([3, 1, 2], [2, 0]).tolist() == [2, 3]
    assert select_target(torch.tensor([3, 1, 2]), [1]).tolist() == [1]
    assert select_target([3, 1, 2], torch.tensor([0, 0])).tolist() == [3, 3]
    assert select_target(5, [0, 1]) == 5
    with pytest.raises(AttributionError, match="2 targets, but input 2 is selected"):
        select_target([3, 1], [2])


class CamAtEight(AttributionPlugin):
    """A layer-resolution method: an 8x8 map over the 64x64 demo input, as a CAM returns it."""

    name = "cam-at-eight"
    title = "CAM at 8x8"
    description = "The input's brightness, pooled to 8x8."
    params = (TARGET, FAITHFULNESS_STEPS)
    shape = (8, 8)

    def explain(self, ctx, item, inputs, target, params):
        pooled = torch.nn.functional.adaptive_avg_pool2d(inputs[0].mean(0, keepdim=True), self.shape)[0]
        return Explanation(pooled - pooled.min())


@pytest.mark.parametrize("steps", ["0", "4"])
def test_a_layer_sized_map_is_upsampled_to_the_input_whatever_the_faithfulness_steps(steps):
    from nnvis_core.testing import check_plugin

    check = check_plugin(CamAtEight(), params={"faithfulness_steps": steps}, images=2)
    for result in check.results.values():
        heatmap = result.artifacts[0]
        assert heatmap.values.shape == (64, 64)
        assert ("deletion_auc" in result.metrics) == (steps != "0") and "mask_share" in result.metrics


@pytest.mark.parametrize("steps", ["0", "4"])
def test_a_map_of_another_aspect_ratio_is_refused_in_one_line_naming_both_shapes(steps):
    from nnvis_core.testing import ContractError, check_plugin

    wide = type("Wide", (CamAtEight,), {"name": "wide-cam", "shape": (8, 32)})()
    with pytest.raises(ContractError) as caught:
        check_plugin(wide, params={"faithfulness_steps": steps}, images=1)
    assert "AttributionError: the method's map of shape (8, 32) does not have the aspect ratio of the 64x64 input" \
        in str(caught.value)
