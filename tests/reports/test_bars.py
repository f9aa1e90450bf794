"""Bar charts (nnvis_core.BarChart): validated, cached, stored in report.json and drawn as SVG
bars in index.html with every label escaped."""

from __future__ import annotations

import json
import re
from importlib import resources

import numpy as np
import pytest
from conftest import registry_with

from nnvis_core import BarChart, Plugin, Result, Scope
from nnvis_core.contract.artifacts import ArtifactError
from nnvis_core.run.cache import decode_result, encode_result
from nnvis_core.run.config import ReportConfig
from nnvis_core.testing import ContractError, check_plugin
from nnvis_reports import build_report
from nnvis_reports.reader import read_report

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads(resources.files("nnvis_reports").joinpath("report.schema.json").read_text())
HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(2)>', "{{ 7*7 }}"]


class PerClass(Plugin):
    """A dataset plugin's common output: a value per class, here two series over hostile labels."""

    name = "per-class"
    title = "Per class"
    description = "Images per predicted class, and a made-up score with a negative value."
    scope = Scope.DATASET

    def run_dataset(self, ctx, items, params):
        counts = [0.0] * len(HOSTILE)
        for item in items:
            counts[item.predicted % len(HOSTILE)] += 1
        return [BarChart("images per class", HOSTILE, {"images": counts, "<b>score</b>": [0.5, -0.25, 1.0]},
                         x_label="class <i>", y_label="images")]


def test_a_plugin_returning_bars_renders_them_in_report_json_and_index_html(few_demo_images, tmp_path):
    out = tmp_path / "out"
    outcome = build_report(ReportConfig(few_demo_images, out, plugins=["per-class"]), registry_with(PerClass()))
    assert outcome.exit_code == 0
    jsonschema.validate(json.loads((out / "report.json").read_text(encoding="utf-8")), SCHEMA)
    entry = read_report(out)["dataset"]["per-class"]
    [bars] = entry["artifacts"]
    assert bars["kind"] == "bars" and bars["labels"] == HOSTILE and bars["x_label"] == "class <i>"
    assert sum(bars["series"]["images"]) == 6 and bars["series"]["<b>score</b>"] == [0.5, -0.25, 1.0]

    page = (out / "index.html").read_text(encoding="utf-8")
    svg = re.search(r'<svg class="chart bars".*?</svg>', page, re.S).group(0)
    assert svg.count("<rect ") == len(HOSTILE) * 2  # one bar per label and series
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg and "<script>alert" not in page
    assert "<img src=x" not in page and "<b>score</b>" not in page and "&lt;b&gt;score&lt;/b&gt;" in page
    assert "{{ 7*7 }}" in svg and "49" not in re.findall(r"<text[^>]*>([^<]*)</text>", svg)


def test_the_bars_draw_in_a_browser_with_their_labels_as_text(few_demo_images, tmp_path, open_report):
    out = tmp_path / "out"
    build_report(ReportConfig(few_demo_images, out, plugins=["per-class"]), registry_with(PerClass()))
    opened = open_report(out / "index.html")
    chart = opened.page.locator("svg.chart.bars").first
    chart.scroll_into_view_if_needed()
    boxes = chart.locator("rect").evaluate_all("rects => rects.map(r => r.getBBox().height)")
    assert len(boxes) == len(HOSTILE) * 2 and all(height > 0 for height in boxes)
    titles = chart.locator("rect title").all_text_contents()
    assert any(title.startswith(HOSTILE[0] + ": images ") for title in titles)  # a label as text, not markup
    assert chart.bounding_box()["width"] > 100
    assert opened.dialogs == [] and opened.console_errors == [] and opened.page_errors == []


def test_bars_rise_from_zero_and_negative_values_hang_below_it():
    from nnvis_reports.bars import bar_geometry

    geometry = bar_geometry({"labels": ["a", "b"], "series": {"s": [2.0, -1.0]}})
    up, down = geometry["bars"]
    assert up["y"] + up["height"] == pytest.approx(geometry["y_zero"], abs=0.01)
    assert down["y"] == pytest.approx(geometry["y_zero"], abs=0.01)
    assert up["height"] == pytest.approx(2 * down["height"], rel=0.01)


def test_bars_are_cached_and_come_back_equal():
    bars = BarChart("h", ["a", "b"], {"n": [1.0, 2.0]}, y_label="count", caption="c")
    meta, arrays = encode_result(Result([bars], {"m": 1.0}), 0.5)
    result, seconds = decode_result(json.loads(json.dumps(meta)), arrays)
    assert result.artifacts == [bars] and seconds == 0.5


@pytest.mark.parametrize("bars, message", [
    (BarChart("b", ["a", "b"], {"n": [1.0]}), "series 'n' has 1 values for 2 labels"),
    (BarChart("b", ["a"], {"n": [float("nan")]}), "contains NaN or infinite values"),
    (BarChart("b", [], {"n": []}), "has no labels"),
    (BarChart("b", ["a"], {}), "has no series"),
])
def test_bad_bars_are_refused_and_the_test_kit_names_them(bars, message):
    with pytest.raises(ArtifactError, match=re.escape(message)):
        Result([bars]).validate()
    plugin = type("BadBars", (Plugin,), {"name": "bad-bars", "title": "Bad bars", "description": "d",
                                         "scope": Scope.MODEL, "run_model": lambda self, ctx, params: [bars]})()
    with pytest.raises(ContractError, match=re.escape("bad output: bar chart 'b'")) as caught:
        check_plugin(plugin, images=1)
    assert message in str(caught.value)


def test_a_histogram_counts_values_into_labelled_bins():
    bars = BarChart.histogram("spread", np.array([0.0, 0.1, 0.9, 1.0]), bins=2)
    assert bars.labels == ["0 to 0.5", "0.5 to 1"] and bars.series == {"count": [2.0, 2.0]}
    bars.validate()
