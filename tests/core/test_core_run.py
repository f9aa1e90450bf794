"""The core owns the run: it emits typed outcomes to any sink, in a fixed order, and the HTML
report is one sink among others (nnvis_core.runner, nnvis_core.run.sink)."""

from __future__ import annotations

import types

import numpy as np
import pytest
from conftest import registry_with

from nnvis_core import Heatmap, Plugin, Scope, hookimpl
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.plan import CallOutcome, UsageError
from nnvis_core.run.registry import load_registry
from nnvis_core.run.sink import MemorySink
from nnvis_core.runner import prepare, run
from nnvis_reports import HtmlReport
from nnvis_reports.reader import read_report


class Flaky(Plugin):
    name = "flaky"
    title = "Flaky"
    description = "Fails on circles, a heatmap of the red channel elsewhere."
    scope = Scope.IMAGE

    def run_image(self, ctx, item, params):
        if item.record.relpath.startswith("circle"):
            raise ValueError("circles are not supported")
        return [Heatmap("red", item.pixels[..., 0].astype(np.float32))]


class Counter(Plugin):
    name = "counter"
    title = "Counter"
    description = "Counts the images of the folder."
    scope = Scope.DATASET

    def run_dataset(self, ctx, items, params):
        from nnvis_core import Text

        return [Text("count", str(sum(1 for _ in items)))]


class OrderSink(MemorySink):
    """Records the order of the protocol's calls."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def begin(self, plan):
        self.calls.append("begin")
        return super().begin(plan)

    def add_image(self, item):
        self.calls.append("image")
        super().add_image(item)

    def add_image_result(self, item, run, outcome):
        self.calls.append(f"result:{run.plugin.name}")
        super().add_image_result(item, run, outcome)

    def add_global_result(self, run, outcome):
        self.calls.append(f"global:{run.plugin.name}")
        super().add_global_result(run, outcome)

    def finish(self, outcome):
        self.calls.append("finish")
        super().finish(outcome)

    def close(self):
        self.calls.append("close")
        super().close()


def test_an_in_memory_sink_gets_typed_outcomes_and_nothing_is_written(few_demo_images, tmp_path):
    sink = OrderSink()
    config = ReportConfig(few_demo_images, tmp_path / "out", plugins=["flaky", "counter"])
    outcome = run(config, registry_with(Flaky(), Counter()), sink)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    assert outcome.failed_calls == 2 and outcome.exit_code == 1 and sink.outcome is outcome
    flaky = sink.outcomes("flaky")
    assert len(flaky) == 6 and all(isinstance(o, CallOutcome) for o in flaky.values())
    failed = {path for path, o in flaky.items() if not o.ok}
    assert failed == {p for p in flaky if p.startswith("circle")}
    assert all("circles are not supported" in flaky[p].error and "Traceback" in flaky[p].traceback for p in failed)
    assert all(flaky[p].result.artifacts[0].values.shape == (64, 64) for p in set(flaky) - failed)
    assert sink.global_results["counter"].result.artifacts[0].text == "6"
    # begin, then per image its results in plugin order, then the dataset plugin, finish, close
    assert sink.calls[0] == "begin" and sink.calls[-2:] == ["finish", "close"]
    assert sink.calls[1:-3] == ["image", "result:flaky"] * 6 and sink.calls[-3] == "global:counter"


def test_a_usage_error_comes_before_the_sink_is_touched(few_demo_images, tmp_path):
    sink = OrderSink()
    with pytest.raises(UsageError, match="unknown plugin nope"):
        run(ReportConfig(few_demo_images, tmp_path / "out", plugins=["nope"]), load_registry(), sink)
    assert sink.calls == []


def test_the_sink_is_closed_when_the_run_breaks(few_demo_images, tmp_path):
    class Broken(OrderSink):
        def add_image(self, item):
            raise MemoryError("disk full")

    sink = Broken()
    with pytest.raises(MemoryError):
        run(ReportConfig(few_demo_images, tmp_path / "out"), load_registry(), sink)
    assert sink.calls == ["begin", "close"]


def test_the_html_report_is_a_registered_sink(few_demo_images, tmp_path):
    registry = load_registry()
    factory = registry.sinks["html"].item
    assert registry.sinks["html"].origin.distribution == "nnvis"
    config = ReportConfig(few_demo_images, tmp_path / "out")
    sink = factory.create(config)
    assert isinstance(sink, HtmlReport)
    assert run(config, registry, sink).exit_code == 0
    report = read_report(tmp_path / "out")
    assert report["format"] == "nnvis-report" and len(report["images"]) == 6


def test_prepare_gives_a_plan_with_every_plugin_and_the_installed_ones_in_ctx(few_demo_images, tmp_path):
    plan = prepare(ReportConfig(few_demo_images, tmp_path / "out", plugins=["saliency", "tsne"]), load_registry())
    assert [r.plugin.name for r in plan.runs] == ["saliency", "tsne"]
    assert [r.plugin.name for r in plan.image_runs] == ["saliency"]
    assert plan.steps == 6 * 1 + 1 and len(plan.records) == 6
    assert "occlusion" in plan.ctx.plugins and plan.ctx.plugins["occlusion"].name == "occlusion"


class OnlyForTransformers(Plugin):
    name = "only-transformers"
    title = "Only transformers"
    description = "Applies to no convnet."
    scope = Scope.IMAGE

    def applies_to(self, ctx):
        return "the model computes no attention"

    def run_image(self, ctx, item, params):
        raise AssertionError("never called")


def test_all_leaves_out_a_plugin_that_does_not_apply_and_the_report_says_why(few_demo_images, tmp_path):
    from nnvis_reports import build_report

    lines = []
    holder = types.SimpleNamespace(nnvis_register_plugins=hookimpl(lambda register: register(OnlyForTransformers())))
    registry = load_registry(only=("model_sources", "html_report", "saliency"), extra=[("test", holder)])
    outcome = build_report(ReportConfig(few_demo_images, tmp_path / "out", plugins=["all"]), registry,
                           log=lines.append)
    report = read_report(tmp_path / "out")
    assert {"name": "only-transformers", "reason": "the model computes no attention"} in report["skipped_plugins"]
    assert [p["name"] for p in report["plugins"]] == ["saliency"]
    assert "left out only-transformers: the model computes no attention" in lines
    assert outcome.failed_calls == 0


def test_a_plugin_named_on_its_own_that_does_not_apply_is_a_usage_error(few_demo_images, tmp_path):
    sink = OrderSink()
    with pytest.raises(UsageError, match="only-transformers does not apply to model demo: the model computes no"):
        run(ReportConfig(few_demo_images, tmp_path / "out", plugins=["saliency", "only-transformers"]),
            registry_with(OnlyForTransformers()), sink)
    assert sink.calls == []
