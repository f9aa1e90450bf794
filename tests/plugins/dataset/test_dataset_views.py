"""The folder views end to end: t-SNE map quality, saved arrays, neighbour strips, and the report."""

from __future__ import annotations

import json
import shutil
import time
import types
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nnvis_core import hookimpl
from nnvis_core.contract.stream import ImageStream
from nnvis_core.demo.bundle import write_bundle
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_core.runner import UsageError, prepare
from nnvis_plugins.dataset.embedding import cosine_neighbours, knn_agreement
from nnvis_plugins.dataset.features import collect_features
from nnvis_plugins.dataset.tsne import tsne_result
from nnvis_reports import build_report
from nnvis_reports.reader import read_report as read_view

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads(resources.files("nnvis_reports").joinpath("report.schema.json").read_text())
ONE_THREAD = {"tsne": {"threads": "1"}}  # the test machine's cores are shared


def read_report(out: Path) -> dict:
    """The first model's view of the report, after checking the file against the schema."""
    jsonschema.validate(read_view(out, model=None), SCHEMA)
    report = read_view(out)
    return report


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory, demo_images) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("views") / "out"
    config = ReportConfig(demo_images, out, plugins=["tsne", "neighbours"], params=ONE_THREAD)
    assert build_report(config, load_registry()).exit_code == 0
    return out, read_report(out)


def test_tsne_map_of_the_demo_images_keeps_classes_together(demo_report):
    out, report = demo_report
    result = report["dataset"]["tsne"]
    assert result["status"] == "ok"
    scatter, grid = result["artifacts"]
    points = np.load(out / scatter["raw"])
    features = np.load(out / scatter["features"])
    assert points.shape == (40, 2) and features.shape == (40, 128)
    assert np.allclose(points, np.array(scatter["points"]), atol=1e-4)
    truth = [report["images"][i]["true_class"]["name"] for i in scatter["image_ids"]]
    assert scatter["true_labels"] == truth
    assert scatter["labels"] == [report["images"][i]["predictions"][0]["name"] for i in scatter["image_ids"]]
    agreement = knn_agreement(points, truth, k=5)
    assert agreement >= 0.9
    assert result["metrics"]["knn5_agreement_true"] == pytest.approx(agreement)
    # The grid holds each image exactly once, in a 7-column layout (ceil(sqrt(40))).
    assert grid["columns"] == 7
    assert sorted(t["image_id"] for t in grid["tiles"] if t["image_id"] is not None) == list(range(40))
    # The sprite sheet has one 32-pixel thumbnail per point, the first one being image 0's input.
    sprite = scatter["sprite"]
    with Image.open(out / sprite["path"]) as sheet:
        cells = np.asarray(sheet.convert("RGB"))
    assert cells.shape == (6 * 32, 7 * 32, 3)  # 40 cells in rows of 7
    with Image.open(out / report["images"][scatter["image_ids"][0]]["input"]) as first:
        thumb = np.asarray(first.convert("RGB").resize((32, 32), Image.BILINEAR))
    assert np.array_equal(cells[:32, :32], thumb)


def test_neighbour_strips_are_the_cosine_nearest_images(demo_report):
    out, report = demo_report
    scatter = report["dataset"]["tsne"]["artifacts"][0]
    features = np.load(out / scatter["features"])  # the same penultimate layer
    expected, _ = cosine_neighbours(features, 5)
    ids = scatter["image_ids"]
    for row, image_id in enumerate(ids):
        [strip] = report["images"][image_id]["results"]["neighbours"]["artifacts"]
        assert strip["kind"] == "gallery" and strip["columns"] == 5
        assert [t["image_id"] for t in strip["tiles"]] == [ids[j] for j in expected[row]]
        assert all(t["path"] is None for t in strip["tiles"])
    metrics = report["dataset"]["neighbours"]["metrics"]
    assert 0.7 <= metrics["neighbour_same_true"] <= 0.8  # 5 images a class: at most 4 of 5 can match
    html = (out / "index.html").read_text(encoding="utf-8")
    section = html[html.index('id="img-0"'):html.index('id="img-1"')]
    assert "Nearest neighbours in feature space" in section
    assert section.count('<a href="#img-') >= 5 + 1


def test_tsne_on_a_larger_generated_folder(tmp_path):
    write_bundle(tmp_path, per_class=40, seed=11)
    plan = prepare(ReportConfig(tmp_path / "images", tmp_path / "out", plugins=["tsne"]), load_registry())
    records, ctx = plan.records, plan.ctx
    features = collect_features(ctx, ImageStream(records, ctx))
    assert features.features.shape == (320, 128)
    result = tsne_result(features, ctx.class_names, "penultimate", seed=0, threads=1)
    assert result.metrics["knn5_agreement_true"] >= 0.9
    assert result.metrics["knn5_share_true"] >= 0.8


def test_tsne_and_neighbours_share_one_feature_pass(few_demo_images, tmp_path, monkeypatch):
    from nnvis_plugins.dataset import features as feature_module

    streamed = []
    real = feature_module._stream_features
    monkeypatch.setattr(feature_module, "_stream_features",
                        lambda *args: streamed.append(args[2]) or real(*args))
    config = ReportConfig(few_demo_images, tmp_path / "out", plugins=["tsne", "neighbours"], params=ONE_THREAD)
    assert build_report(config, load_registry()).exit_code == 0
    assert streamed == ["penultimate"]
    # Another layer is another pass.
    streamed.clear()
    params = {**ONE_THREAD, "neighbours": {"layer": "last_conv"}}
    config = ReportConfig(few_demo_images, tmp_path / "out2", plugins=["tsne", "neighbours"], params=params)
    assert build_report(config, load_registry()).exit_code == 0
    assert streamed == ["penultimate", "last_conv"]


def test_only_decodes_just_the_images_asked_for(few_demo_images, tmp_path, monkeypatch):
    from nnvis_core.contract import stream

    plan = prepare(ReportConfig(few_demo_images, tmp_path / "out", plugins=["tsne"]), load_registry())
    records, ctx = plan.records, plan.ctx
    decoded = []
    real = stream.load_rgb
    monkeypatch.setattr(stream, "load_rgb", lambda path, **kw: decoded.append(path) or real(path, **kw))
    items = ImageStream(records, ctx)
    wanted = {records[1].index, records[-1].index}
    got = list(stream.only(items, wanted))
    assert sorted(item.record.index for item in got) == sorted(wanted)
    assert decoded == [records[1].path, records[-1].path]
    # A plain list gives the same items without a stream.
    everything = list(items)
    assert [i.record.index for i in stream.only(everything, wanted)] == [i.record.index for i in got]


def test_bad_layer_is_a_usage_error_before_any_output(few_demo_images, tmp_path):
    out = tmp_path / "out"
    config = ReportConfig(few_demo_images, out, plugins=["tsne"], params={"tsne": {"layer": "featurez.3"}})
    with pytest.raises(UsageError, match=r"tsne.layer: no layer named 'featurez.3'.*features.3"):
        build_report(config, load_registry())
    assert not out.exists()


def wait_until(page, expression: str, seconds: float = 10.0) -> None:
    """Poll a JS expression from Python: the report's CSP forbids the eval that wait_for_function polls with."""
    deadline = time.monotonic() + seconds
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


def test_interactive_scatter_in_the_browser(few_demo_images, tmp_path, open_report):
    out = tmp_path / "out"
    build_report(ReportConfig(few_demo_images, out, plugins=["tsne"], params=ONE_THREAD), load_registry())
    report = read_report(out)
    scatter = report["dataset"]["tsne"]["artifacts"][0]
    opened = open_report(out / "index.html")
    page = opened.page
    root = "document.querySelector('#dataset .scatter-view')"
    wait_until(page, f"{root}.nnvisScatter !== undefined")
    page.locator("#dataset .scatter-canvas").scroll_into_view_if_needed()

    def where(i: int) -> list[float]:
        return page.evaluate(f"{root}.nnvisScatter.clientPosition({i})")

    x, y = where(2)
    page.mouse.move(x, y)
    tip = page.locator("#dataset .scatter-tip")
    assert tip.is_visible()
    name = report["images"][scatter["image_ids"][2]]["path"]
    text = tip.inner_text()
    assert name in text and f"predicted: {scatter['labels'][2]}" in text
    assert f"true: {scatter['true_labels'][2]}" in text

    legend = page.locator("#dataset .scatter-legend li")
    assert legend.count() == len(set(scatter["labels"]))
    before = page.evaluate(f"[0,1,2,3,4,5].map(i => {root}.nnvisScatter.colourOf(i))")
    page.select_option("#dataset .scatter-colour", "truth")
    assert page.evaluate(f"{root}.nnvisScatter.colourBy()") == "truth"
    after = page.evaluate(f"[0,1,2,3,4,5].map(i => {root}.nnvisScatter.colourOf(i))")
    same_class = [p == t for p, t in zip(scatter["labels"], scatter["true_labels"])]
    assert [b == a for b, a in zip(before, after)] == same_class  # colours follow the class names
    assert legend.count() == len(set(scatter["true_labels"]))

    scale = page.evaluate(f"{root}.nnvisScatter.view.scale")
    page.mouse.wheel(0, -400)
    wait_until(page, f"{root}.nnvisScatter.view.scale > {scale}")
    x2, y2 = where(2)
    assert abs(x2 - x) < 2 and abs(y2 - y) < 2  # zoom is about the pointer, which sits on point 2

    page.mouse.move(x2, y2)
    page.mouse.click(x2, y2)
    assert page.evaluate("location.hash") == f"#img-{scatter['image_ids'][2]}"
    assert opened.console_errors == [] and opened.page_errors == []
    assert all(url.startswith("file://") for url in opened.requests)
    assert any(url.endswith(".sprite.png") for url in opened.requests)


def test_names_in_the_scatter_data_are_escaped(few_demo_images, tmp_path):
    source = next(few_demo_images.rglob("*.png"))
    hostile = "<!--<script>alert(1)<b>.png"  # a file name cannot hold "/", so no closing tag
    shutil.copy(source, source.parent / hostile)
    out = tmp_path / "out"
    build_report(ReportConfig(few_demo_images, out, plugins=["tsne"], params=ONE_THREAD), load_registry())
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html and "<!--" not in html
    block = html[html.index('class="scatter-data">') + len('class="scatter-data">'):]
    data = json.loads(block[:block.index("</script>")])
    assert any(name.endswith(hostile) for name in data["names"])


def test_dataset_results_may_attach_artifacts_to_single_images(few_demo_images, tmp_path):
    from nnvis_core import Plugin, Scope, Text
    from nnvis_core.contract.artifacts import ArtifactError, Heatmap, Result, as_result

    with pytest.raises(ArtifactError, match="not a report image index"):
        as_result(Result([], image_artifacts={"a": [Text("t", "x")]}))
    with pytest.raises(ArtifactError, match="NaN"):
        as_result(Result([], image_artifacts={0: [Heatmap("h", np.full((2, 2), np.nan))]}))

    class Tagger(Plugin):
        name, title, description, scope = "tagger", "Tagger", "tags two images", Scope.DATASET

        def run_dataset(self, ctx, items, params):
            return Result([Text("all", "done")], image_artifacts={1: [Text("tag", "one")], 4: [Text("tag", "four")],
                                                                  999: [Text("tag", "nobody")]})

    holder = types.SimpleNamespace(nnvis_register_plugins=hookimpl(lambda register: register(Tagger())))
    out = tmp_path / "out"
    registry = load_registry(extra=[("test-plugins", holder)])
    assert build_report(ReportConfig(few_demo_images, out, plugins=["tagger"]), registry).exit_code == 0
    report = read_report(out)
    tagged = {i: image["results"]["tagger"]["artifacts"][0]["text"] for i, image in enumerate(report["images"])
              if "tagger" in image["results"]}
    assert tagged == {1: "one", 4: "four"}
    assert report["dataset"]["tagger"]["artifacts"][0]["text"] == "done"
    html = (out / "index.html").read_text(encoding="utf-8")
    assert html.index('id="img-4"') < html.index(">four<") < html.index('id="img-5"')
