"""Results that pass every check yet show nothing (a zero or constant map, a flat picture, a loss that
did not fall) are marked so, by the core, in report.json, on their card, in the matrix's data and in the
leaderboard's count, instead of a plain ok."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
from conftest import registry_with

from nnvis_core import Chart, Gallery, Heatmap, Image, Plugin, Result, Scope
from nnvis_core.contract.conformance import degenerate_reasons
from nnvis_core.run.config import ReportConfig
from nnvis_core.toolkit import FAITHFULNESS_STEPS, TARGET, AttributionPlugin, Explanation
from nnvis_reports import build_report

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads(resources.files("nnvis_reports").joinpath("report.schema.json").read_text())
GREY = np.full((8, 8, 3), 0.5)


@pytest.mark.parametrize("artifact, reason", [
    (Heatmap("m", np.zeros((8, 8))), "heatmap 'm' is zero everywhere"),
    (Heatmap("m", np.full((8, 8), 2.0)), "heatmap 'm' is constant (2 everywhere)"),
    (Image("p", GREY), "image 'p' is one flat colour"),
    (Gallery("g", [GREY, GREY * 0.5]), "every picture of gallery 'g' is one flat colour"),
    (Chart("loss", [0, 1, 2], {"style": [1.0, 0.5, 1.0]}, minimized=True),
     "'style' of chart 'loss' did not decrease (first 1, last 1)"),
])
def test_each_kind_of_blank_result_is_named(artifact, reason):
    assert degenerate_reasons(Result([artifact])) == (reason,)


def test_a_result_that_shows_something_is_not_degenerate():
    ramp = np.linspace(0, 1, 64).reshape(8, 8)
    noise = np.random.default_rng(0).random((8, 8, 3))
    result = Result([Heatmap("m", ramp), Image("p", noise), Gallery("g", [GREY, noise]),  # one flat tile is fine
                     Gallery("grid", [GREY, None, GREY], image_ids=[None, 3, None]),  # padding around a report image
                     Chart("loss", [0, 1], {"style": [1.0, 0.5]}, minimized=True),
                     Chart("accuracy", [0, 1], {"top-1": [0.5, 0.5]})])  # not a loss: not judged
    assert degenerate_reasons(result) == ()


class Blank(AttributionPlugin):
    """An attribution method whose map is zero on the images of one folder."""

    name = "blank-on-circles"
    title = "Blank on circles"
    description = "Zero on circles, the image's brightness elsewhere."
    params = (TARGET, FAITHFULNESS_STEPS)

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        import torch

        brightness = torch.from_numpy(item.pixels.mean(axis=2)).float()
        zero = item.record.folder == "circle"
        return Explanation(brightness * 0 if zero else brightness, "brightness or nothing")


def test_the_report_marks_blank_maps_and_counts_them(few_demo_images, tmp_path):
    out = tmp_path / "out"
    params = {"blank-on-circles": {"faithfulness_steps": 0}}
    build_report(ReportConfig(few_demo_images, out, plugins=["blank-on-circles"], params=params),
                 registry_with(Blank()))
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    jsonschema.validate(report, SCHEMA)
    section = report["by_model"][0]
    marked = {image["path"]: image["results"]["blank-on-circles"].get("degenerate") for image in section["images"]}
    circles = {path for path in marked if path.startswith("circle/")}
    assert circles and all(marked[path] == ["heatmap 'blank-on-circles' is zero everywhere"] for path in circles)
    assert all(marked[path] is None for path in marked.keys() - circles)
    assert all(image["results"]["blank-on-circles"]["status"] == "ok" for image in section["images"])
    [row] = report["leaderboard"]
    assert row["degenerate"] == len(circles) and row["images"] == len(marked)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert f"({len(circles)} show nothing)" in page
    assert page.count("shows nothing: heatmap &#39;blank-on-circles&#39; is zero everywhere") == len(circles)
    assert '"degenerate":true' in page  # the matrix's data, which its filter reads


class Stuck(Plugin):
    """A dataset plugin whose optimization never lowered its loss."""

    name = "stuck"
    title = "Stuck"
    description = "A loss curve that ends where it began."
    scope = Scope.DATASET

    def run_dataset(self, ctx, items, params):
        return [Chart("loss", [0, 1, 2], {"loss": [2.0, 3.0, 2.0]}, minimized=True)]


def test_a_loss_that_did_not_fall_marks_a_dataset_result(few_demo_images, tmp_path):
    out = tmp_path / "out"
    build_report(ReportConfig(few_demo_images, out, plugins=["stuck"]), registry_with(Stuck()))
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    entry = report["by_model"][0]["dataset"]["stuck"]
    assert entry["status"] == "ok"
    assert entry["degenerate"] == ["'loss' of chart 'loss' did not decrease (first 2, last 2)"]
