"""nnvis_core.testing passes a good plugin and names each way a bad one breaks the contract."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nnvis_core import Chart, Heatmap, Param, Plugin, Result, Scatter, Scope, Table
from nnvis_core.testing import (
    ContractError,
    check_declaration,
    check_installed,
    check_plugin,
    declaration_problems,
    demo_items,
    model_changes,
    model_state,
)


class Brightness(Plugin):
    name = "brightness"
    title = "Brightness"
    description = "Mean of the colour channels of the input."
    params = (Param("gamma", float, 1.0, "exponent", minimum=0.1),)

    def run_image(self, ctx, item, params):
        values = (item.pixels.mean(axis=2) / 255.0) ** params["gamma"]
        return Result([Heatmap("brightness", values)], {"mean": float(values.mean())})


@pytest.fixture(autouse=True)
def temporary_folders_in_tmp_path(tmp_path, monkeypatch):
    """Reports the kit keeps after a failure land in pytest's tmp_path, not in /tmp."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def _variant(name: str, **methods) -> Plugin:
    """A Brightness with its name and some methods replaced."""
    return type(name.title(), (Brightness,), {"name": name, **methods})()


def test_a_good_plugin_passes_and_its_results_can_be_inspected(tmp_path):
    check = check_plugin(Brightness(), params={"gamma": "2"}, out_dir=tmp_path / "kept")
    assert check.params == {"gamma": 2.0}
    assert sorted(check.results) == ["circle/circle_00.png", "square/square_00.png", "star/star_00.png",
                                     "triangle/triangle_00.png"]
    [heatmap] = check.artifacts("circle/circle_00.png")
    assert heatmap.values.shape == (64, 64) and 0 <= heatmap.values.min() and heatmap.values.max() <= 1
    assert check.report["plugins"][0]["calls"] == 4 and check.report["plugins"][0]["failures"] == 0
    assert (check.out_dir / "index.html").is_file() and check.out_dir == tmp_path / "kept" / "report"
    with pytest.raises(KeyError, match="no call for"):
        check.artifacts(None)


def test_the_temporary_report_is_removed_after_a_pass_and_kept_after_a_failure(tmp_path):
    check = check_plugin(Brightness(), images=2)
    assert not check.out_dir.exists() and check.out_dir.parent.parent == tmp_path
    with pytest.raises(ContractError) as caught:
        check_plugin(_variant("fails", run_image=lambda self, ctx, item, params: 1 / 0), images=2)
    kept = re.search(r"report kept in (\S+)\)", str(caught.value)).group(1)
    assert (Path(kept) / "index.html").is_file()


def _failure(plugin: Plugin, **kwargs) -> str:
    with pytest.raises(ContractError) as caught:
        check_plugin(plugin, **{"images": 2, **kwargs})
    return str(caught.value)


def test_an_exception_is_reported_with_its_image_and_a_short_traceback():
    def run_image(self, ctx, item, params):
        if item.record.relpath.startswith("square"):
            raise ValueError("no squares please")
        return Brightness.run_image(self, ctx, item, params)

    message = _failure(_variant("picky", run_image=run_image))
    assert "plugin 'picky' breaks the nnvis plugin contract (1 problem;" in message
    assert "run_image on square/square_00.png failed: ValueError: no squares please" in message
    assert "in run_image" in message
    assert "runner.py" not in message and "testing.py" not in message  # nnvis's own frames left out


def _refuse_own_output(values):
    Heatmap("own", values).validate()  # an ArtifactError raised in the plugin's own code


@pytest.mark.parametrize(
    "run_image, first_frame",
    [(lambda self, ctx, item, params: _refuse_own_output(np.full((64, 64), np.nan)), "in <lambda>"),
     (lambda self, ctx, item, params: [Heatmap("nan", np.full((64, 64), np.nan))], "in _finite")],
    ids=["raised-by-the-plugin", "found-by-nnvis"],
)
def test_a_bad_output_traceback_leaves_out_nnvis_calling_frames(run_image, first_frame):
    message = _failure(_variant("bad-trace", run_image=run_image))
    trace = message[message.index("Traceback (most recent call last):"):]
    assert first_frame in trace.splitlines()[1], trace
    for internal in ("calls.py", "timeout.py", "testing.py", "local.py"):
        assert internal not in trace, trace


@pytest.mark.parametrize(
    "run_image, expected",
    [
        (lambda self, ctx, item, params: [Heatmap("nan", np.full((64, 64), np.nan))],
         "bad output: heatmap 'nan' contains NaN or infinite values"),
        (lambda self, ctx, item, params: [Heatmap("inf", np.full((64, 64), np.inf))],
         "bad output: heatmap 'inf' contains NaN or infinite values"),
        (lambda self, ctx, item, params: Heatmap("bare", np.ones((64, 64))), "expected a list of artifacts"),
        (lambda self, ctx, item, params: ["<b>html</b>"], "returned str, not an nnvis artifact"),
        (lambda self, ctx, item, params: Result([], {"score": float("nan")}), "metric 'score' is nan"),
        (lambda self, ctx, item, params: [Heatmap("wide", np.ones((8, 32)))], "give it the input's aspect ratio"),
        (lambda self, ctx, item, params: [Table("t", ["a"], [[np.random.rand()]])], "is not deterministic"),
    ],
    ids=["nan", "inf", "not-a-list", "html-string", "nan-metric", "aspect", "numpy-global-random"],
)
def test_bad_outputs_are_named(run_image, expected):
    message = _failure(_variant("bad-output", run_image=run_image))
    assert expected in message
    assert "call on circle/circle_00.png" in message or "run_image on circle/circle_00.png" in message


def test_random_numbers_from_torch_are_deterministic_under_the_per_call_seed():
    def run_image(self, ctx, item, params):
        return [Heatmap("noise", torch.rand(64, 64).numpy())]

    check = check_plugin(_variant("torch-noise", run_image=run_image), images=2)
    first, second = (check.artifacts(path)[0].values for path in sorted(check.results))
    assert not np.allclose(first, second)  # seeded per image, not one stream replayed


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda module: module.features[0].register_forward_hook(lambda *args: None),
         "a forward hook left on layer 'features.0'"),
        (lambda module: module.train(), "module '(root)' was left in train mode"),
        (lambda module: module.features[0].weight.requires_grad_(False), "requires_grad of 'features.0.weight'"),
        (lambda module: module.features[0].bias.data.add_(1.0), "values of 'features.0.bias' changed"),
        (lambda module: torch.nn.modules.module.register_module_forward_hook(lambda *args: None),
         "a global forward hook left on torch's _global_forward_hooks"),
    ],
    ids=["hook", "train-mode", "requires-grad", "weights", "global-hook"],
)
def test_a_call_that_leaves_the_model_changed_is_named(mutate, expected):
    handles = []

    def run_image(self, ctx, item, params):
        handles.append(mutate(ctx.module))
        return Brightness.run_image(self, ctx, item, params)

    try:
        message = _failure(_variant("messy", run_image=run_image))
    finally:
        for handle in handles:
            if hasattr(handle, "remove"):
                handle.remove()
    if "hook" in expected:  # the run itself fails the call and names the hook, once
        assert "circle/circle_00.png failed: left " + expected.replace(" left on ", " on ") in message
        assert "left the model changed" not in message
    else:
        assert "call on circle/circle_00.png left the model changed (restore it in a finally block)" in message
        assert expected in message


def test_a_call_that_raises_is_also_checked_for_leftovers():
    def run_image(self, ctx, item, params):
        ctx.module.features[0].register_forward_hook(lambda *args: None)
        raise RuntimeError("forgot the finally")

    message = _failure(_variant("leaky", run_image=run_image))
    assert "RuntimeError: forgot the finally; it also left a forward hook on layer 'features.0'" in message


def test_a_leaked_hook_is_reported_once_per_call():
    def run_image(self, ctx, item, params):
        ctx.module.features[0].register_forward_hook(lambda *args: None)
        return Brightness.run_image(self, ctx, item, params)

    message = _failure(_variant("messy", run_image=run_image))
    assert message.count("circle/circle_00.png") == 1, message
    assert "left a forward hook on layer 'features.0' (removed by nnvis" in message


def test_repeated_problems_are_summarized():
    message = _failure(_variant("always-nan", run_image=lambda self, ctx, item, params:
                                [Heatmap("nan", np.full((64, 64), np.nan))]), images=5)
    assert "(5 problems;" in message
    assert message.count("failed: bad output") == 3 and "... and 2 more call(s)" in message


def test_dataset_and_model_scopes_and_scatter_links():
    class Embedding(Plugin):
        name = "embedding"
        title = "Embedding"
        description = "Each image's top-two probabilities as a point."
        scope = Scope.DATASET
        offset = 0

        def run_dataset(self, ctx, items, params):
            items = list(items)
            points = np.array([item.probabilities.topk(2).values.numpy() for item in items])
            return [Scatter("top two", points, image_ids=[item.record.index + self.offset for item in items])]

    class Depth(Plugin):
        name = "depth"
        title = "Depth"
        description = "Parameters per layer."
        scope = Scope.MODEL

        def run_model(self, ctx, params):
            counts = [float(p.numel()) for p in ctx.module.parameters()]
            return [Chart("parameters", list(range(len(counts))), {"count": counts})]

    check = check_plugin(Embedding(), images=3)
    assert check.artifacts(None)[0].points.shape == (3, 2)
    assert check_plugin(Depth(), images=1).artifacts(None)[0].series["count"][0] == 432.0
    broken = Embedding()
    broken.offset = 10
    with pytest.raises(ContractError, match=r"scatter 'top two' links to images \[10, 11, 12\]"):
        check_plugin(broken, images=3)


class NoRunMethod(Plugin):
    name = "lazy"
    title = "Lazy"
    description = "Declares image scope and implements nothing."
    params = (Param("Bad-Name", int, 1, "x"), Param("nohelp", int, 1), Param("low", int, 0, "too low", minimum=1),
              Param("kind", str, "c", "closed set", choices=("a", "b")))


def test_declaration_problems_are_all_listed():
    with pytest.raises(ContractError) as caught:
        check_declaration(NoRunMethod())
    message = str(caught.value)
    assert "(5 problems)" in message
    for expected in ("does not define run_image()", "parameter name 'Bad-Name' must match",
                     "parameter nohelp has no help text", "parameter low: default 0 is not accepted",
                     "parameter kind: default 'c' is not accepted"):
        assert expected in message


class BadRegistration(Plugin):
    """Breaks the registration checks and the kit's own checks in one declaration."""

    name = "Bad Name"
    title = ""
    description = "Declares image scope, a bad name, no title, and a parameter twice."
    params = (Param("nohelp", int, 1), Param("nohelp", int, 2, "again"))


def test_registration_and_declaration_problems_are_listed_together():
    problems = declaration_problems(BadRegistration())
    expected = ("must set a non-empty string 'title'", "plugin name 'Bad Name' must match",
                "declares a parameter twice", "does not define run_image()", "parameter nohelp has no help text")
    for text in expected:
        assert any(text in problem for problem in problems), (text, problems)


def test_an_attribution_plugin_missing_both_required_parameters_hears_of_both():
    from nnvis_core.toolkit import AttributionPlugin

    plugin = type("Bare", (AttributionPlugin,), {"name": "bare", "title": "Bare", "description": "d"})()
    [problem] = declaration_problems(plugin)
    assert "no 'target' parameter" in problem and "no 'faithfulness_steps' parameter" in problem


@pytest.mark.parametrize(
    "plugin, expected",
    [(object(), "is not an instance of nnvis_core.Plugin"),
     (type("Old", (Brightness,), {"name": "old", "api_version": 0})(), "targets plugin API 0")],
)
def test_registration_problems_stop_the_check_before_running(plugin, expected):
    with pytest.raises(ContractError, match=expected):
        check_plugin(plugin)


def test_bad_params_given_to_the_kit_are_a_clear_error():
    with pytest.raises(ContractError, match="cannot run: invalid value 'dark' for brightness.gamma"):
        check_plugin(Brightness(), params={"gamma": "dark"})


def test_demo_items_allow_calling_a_run_method_directly(tmp_path):
    ctx, items = demo_items(tmp_path, images=3)
    assert [item.true_class for item in items] == [0, 1, 2] and all(item.mask is not None for item in items)
    assert [item.predicted for item in items] == [0, 1, 2]  # the demo model gets these right
    result = Brightness().run_image(ctx, items[0], {"gamma": 1.0})
    assert result.metrics["mean"] == pytest.approx(items[0].pixels.mean() / 255.0)


def test_model_changes_is_empty_for_an_untouched_model():
    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    before = model_state(module)
    module(torch.ones(1, 2)).sum().backward()  # gradients are the runner's to clear, not a change
    assert model_changes(before, model_state(module)) == []


def test_check_installed_finds_entry_points_and_explains_when_not(fake_distribution):
    assert check_installed("saliency").origin.distribution == "nnvis"
    fake_distribution("nnvis-plugin-broken", {"broken": "fakeplug_absent"})
    with pytest.raises(ContractError) as caught:
        check_installed("brightness")
    message = str(caught.value)
    assert "plugin 'brightness' is not found through the 'nnvis' entry-point group" in message
    assert "broken (nnvis-plugin-broken) did not load: cannot import fakeplug_absent" in message
    assert "installed: " in message and "saliency" in message and "[project.entry-points.nnvis]" in message
