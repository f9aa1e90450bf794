"""What the test kit refuses, a report refuses too: a hook left on the model and an overlay map
of another aspect ratio are error cards (nnvis_core.run.calls.call_plugin, with the checks of
nnvis_core.contract.conformance), not a silently changed model or a stretched picture."""

from __future__ import annotations

import numpy as np
import torch
from conftest import registry_with

from nnvis_core import Heatmap, Plugin
from nnvis_core.contract.conformance import aspect_problem, hook_keys, remove_leaked_hooks
from nnvis_core.models import ModelOptions, load_model
from nnvis_core.models.layers import resolve_layer_name
from nnvis_core.run.config import ReportConfig
from nnvis_reports import build_report
from nnvis_reports.reader import read_report


class LeavesAHook(Plugin):
    """Puts a forward hook on the last convolution of the first image's call and forgets it."""

    name = "leaves-a-hook"
    title = "Leaves a hook"
    description = "Forgets to remove a forward hook on its first call."

    def run_image(self, ctx, item, params):
        if item.record.index == 0:
            ctx.layer("last_conv").register_forward_hook(lambda module, args, output: None)
        return [Heatmap("fine", np.ones((8, 8)))]


class CountsHooks(Plugin):
    """Runs after the leaky plugin and sees how many forward hooks the model carries."""

    name = "counts-hooks"
    title = "Counts hooks"
    description = "Records the model's forward hooks."
    seen: list[int] = []

    def run_image(self, ctx, item, params):
        self.seen.append(sum(len(module._forward_hooks) for module in ctx.module.modules()))
        return [Heatmap("fine", np.ones((8, 8)))]


class Wide(Plugin):
    name = "wide"
    title = "Wide"
    description = "Returns an overlay map four times wider than tall over a square image."

    def run_image(self, ctx, item, params):
        return [Heatmap("wide", np.ones((8, 32))), Heatmap("alone", np.ones((8, 32)), overlay=False)]


def _report(images, out, *plugins):
    config = ReportConfig(images, out, plugins=[plugin.name for plugin in plugins])
    outcome = build_report(config, registry_with(*plugins))
    return outcome, read_report(out)


def test_a_hook_left_on_the_model_is_an_error_card_naming_the_layer_and_is_removed(few_demo_images, tmp_path):
    CountsHooks.seen = []
    outcome, report = _report(few_demo_images, tmp_path / "out", LeavesAHook(), CountsHooks())
    assert outcome.exit_code == 1 and outcome.failed_calls == 1
    first = report["images"][0]["results"]["leaves-a-hook"]
    layer = resolve_layer_name(load_model("demo", ModelOptions(), registry_with(), "cpu").module, "last_conv")
    assert first["status"] == "error"
    assert first["error"].startswith(f"left a forward hook on layer '{layer}' (removed by nnvis;"), first["error"]
    assert all(image["results"]["leaves-a-hook"]["status"] == "ok" for image in report["images"][1:])
    assert CountsHooks.seen == [0] * len(report["images"])  # removed before the next call
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "left a forward hook on layer" in page and layer in page


def test_an_overlay_map_of_another_aspect_ratio_is_an_error_naming_both_shapes(few_demo_images, tmp_path):
    outcome, report = _report(few_demo_images, tmp_path / "out", Wide())
    entry = report["images"][0]["results"]["wide"]
    assert outcome.exit_code == 1 and entry["status"] == "error"
    assert "heatmap 'wide' of shape (8, 32) is drawn over a 64x64 input" in entry["error"], entry["error"]
    assert "\n" not in entry["error"]


def test_leaked_hooks_are_found_and_removed_global_ones_too():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    kept = model[0].register_forward_hook(lambda *args: None)
    before = hook_keys(model)
    model[1].register_forward_pre_hook(lambda module, args, kwargs: None, with_kwargs=True)
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *args: None)
    try:
        leaked = remove_leaked_hooks(model, before)
    finally:
        handle.remove()  # a no-op when it was removed
    assert leaked == ["a forward pre-hook on layer '1'", "a global forward hook on torch's _global_forward_hooks"]
    assert hook_keys(model) == before and not model[1]._forward_pre_hooks_with_kwargs
    kept.remove()


def test_aspect_problem_accepts_a_smaller_map_of_the_same_shape_only():
    assert aspect_problem((7, 7), (224, 224)) is None and aspect_problem((7, 10), (224, 320)) is None
    assert "(8, 32)" in aspect_problem((8, 32), (64, 64)) and "64x64" in aspect_problem((8, 32), (64, 64))
