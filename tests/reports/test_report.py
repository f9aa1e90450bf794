"""End to end on the demo model: report.json against its schema, the HTML, and contained failures."""

from __future__ import annotations

import json
import re
import shutil
import types
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from nnvis_core import (
    CategoricalMap,
    Chart,
    Gallery,
    Heatmap,
    Image,
    Plugin,
    Result,
    Scatter,
    Scope,
    Table,
    Text,
    hookimpl,
)
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_core.runner import UsageError
from nnvis_reports import build_report
from nnvis_reports.reader import read_report as read_view

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads(resources.files("nnvis_reports").joinpath("report.schema.json").read_text())


def read_report(out: Path) -> dict:
    """The first model's view of the report, after checking the file against the schema."""
    jsonschema.validate(read_view(out, model=None), SCHEMA)
    report = read_view(out)
    return report


def html_sources(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#]+)"', html)


def test_demo_report(few_demo_images, tmp_path):
    out = tmp_path / "out"
    outcome = build_report(ReportConfig(few_demo_images, out), load_registry())
    assert outcome.exit_code == 0
    report = read_report(out)
    assert report["input"] == {"root": str(few_demo_images), "image_count": 6, "readable": 6, "unreadable": 0}
    assert [p["name"] for p in report["plugins"]] == ["saliency"]
    html = (out / "index.html").read_text(encoding="utf-8")
    for image in report["images"]:
        assert image["status"] == "ok"
        assert image["true_class"]["name"] == image["folder"]
        assert len(image["predictions"]) == 5
        assert sum(p["probability"] for p in image["predictions"]) <= 1.0 + 1e-6
        heatmap, curves = image["results"]["saliency"]["artifacts"]
        assert heatmap["kind"] == "heatmap" and curves["kind"] == "chart"
        raw = np.load(out / heatmap["raw"])
        assert raw.shape == (64, 64) and raw.min() >= 0
        assert f'id="img-{image["index"]}"' in html
        assert f'src="{image["input"]}"' in html and f'src="{heatmap["path"]}"' in html
    for source in html_sources(html):
        assert (out / source).is_file(), source
    assert "http://" not in html and "https://" not in html


def test_saliency_npy_equals_a_fresh_computation(few_demo_images, tmp_path):
    from nnvis_core.images import load_rgb
    from nnvis_core.models import ModelOptions, load_model
    from nnvis_plugins.attribution.saliency import saliency_map

    out = tmp_path / "out"
    build_report(ReportConfig(few_demo_images, out), load_registry())
    image = read_report(out)["images"][0]
    model = load_model("demo", ModelOptions(), load_registry())
    pixels = model.preprocess.display(load_rgb(few_demo_images / image["path"]))
    x = model.preprocess.normalize(pixels).unsqueeze(0)
    expected = saliency_map(model.module, x, image["predictions"][0]["index"])[0].numpy()
    raw = np.load(out / image["results"]["saliency"]["artifacts"][0]["raw"])
    np.testing.assert_allclose(raw, expected, rtol=1e-5, atol=1e-7)


class Troublemaker(Plugin):
    """Fails on purpose: raises on one image, returns NaN on another, a wrong type on a third."""

    name = "trouble"
    title = "Troublemaker"
    description = "A test plugin that misbehaves on some images."
    scope = Scope.IMAGE

    def run_image(self, ctx, item, params):
        if item.record.index == 0:
            raise ValueError("cannot cope with this one\nmore detail")
        if item.record.index == 1:
            return [Heatmap("nan", np.full((4, 4), np.nan))]
        if item.record.index == 2:
            return "not a list"
        return Result([Heatmap("fine", np.ones((4, 4)))], {"index": float(item.record.index)})


class Everything(Plugin):
    name = "everything"
    title = "Every artifact"
    description = "Returns one artifact of each kind."
    scope = Scope.DATASET

    def run_dataset(self, ctx, items, params):
        items = list(items)
        points = np.array([[float(i), float(i % 3)] for i in range(len(items))])
        return [
            Scatter("points", points, labels=[ctx.class_names[i.predicted] for i in items],
                    image_ids=[i.record.index for i in items]),
            Table("counts", ["image", "class"], [[i.record.relpath, ctx.class_names[i.predicted]] for i in items]),
            Chart("confidence", [0, 1], {"top": [0.5, 0.9], "second": [0.1, 0.05]}, x_ticks=["a", "b"]),
            Gallery("neighbours", [None, np.zeros((8, 8, 3), np.uint8)], labels=["first <i>", "black"],
                    image_ids=[items[0].record.index, None], columns=2, tile_size=112),
        ]


class ModelOnly(Plugin):
    name = "model-only"
    title = "Model only"
    description = "Needs no image."
    scope = Scope.MODEL

    def run_model(self, ctx, params):
        weights = ctx.module.features[0].weight.detach()
        return [
            Image("first filter", (weights[0].permute(1, 2, 0) - weights.min()).div(np.ptp(weights.numpy())).numpy()),
            CategoricalMap("halves", np.repeat([[0, 1]], 4, axis=0), {0: "left", 1: "right"}),
            Text("note", "<b>not bold</b>"),
        ]


def _registry_with(*plugins):
    holder = types.SimpleNamespace(nnvis_register_plugins=hookimpl(lambda register: [register(p) for p in plugins]))
    return load_registry(extra=[("test-plugins", holder)])


def test_a_failing_plugin_does_not_take_the_report_down(few_demo_images, tmp_path):
    out = tmp_path / "out"
    lines = []
    outcome = build_report(ReportConfig(few_demo_images, out, plugins=["trouble", "saliency"]),
                           _registry_with(Troublemaker()), log=lines.append)
    assert outcome.exit_code == 1 and outcome.failed_calls == 3
    report = read_report(out)
    results = [image["results"] for image in report["images"]]
    assert results[0]["trouble"]["error"] == "ValueError: cannot cope with this one"
    assert "Traceback" in results[0]["trouble"]["traceback"]
    assert "NaN" in results[1]["trouble"]["error"]
    assert "expected a list of artifacts" in results[2]["trouble"]["error"]
    assert all(r["trouble"]["status"] == "ok" for r in results[3:])
    assert all(r["saliency"]["status"] == "ok" for r in results)
    assert sum("plugin trouble failed" in line for line in lines) == 3
    [trouble] = [p for p in report["plugins"] if p["name"] == "trouble"]
    assert trouble["failures"] == 3 and trouble["calls"] == 6
    assert trouble["metrics_summary"] == {"index": {"mean": 4.0, "std": pytest.approx(np.std([3, 4, 5])),
                                                    "min": 3.0, "max": 5.0, "n": 3}}
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "cannot cope with this one" in html


def test_dataset_and_model_sections(few_demo_images, tmp_path):
    out = tmp_path / "out"
    outcome = build_report(ReportConfig(few_demo_images, out, plugins=["everything", "model-only"]),
                           _registry_with(Everything(), ModelOnly()))
    assert outcome.exit_code == 0
    report = read_report(out)
    scatter, table, chart, gallery = report["dataset"]["everything"]["artifacts"]
    first, black = gallery["tiles"]
    assert first == {"path": None, "label": "first <i>", "image_id": 0}
    assert black["image_id"] is None and (out / black["path"]).is_file()
    assert gallery["tile_size"] == 112 and gallery["columns"] == 2
    assert chart["series"] == {"top": [0.5, 0.9], "second": [0.1, 0.05]}
    assert len(scatter["points"]) == 6 and scatter["image_ids"] == list(range(6))
    assert len(table["rows"]) == 6
    image, categorical, text = report["model_results"]["model-only"]["artifacts"]
    assert [item["label"] for item in categorical["legend"]] == ["left", "right"]
    html = (out / "index.html").read_text(encoding="utf-8")
    assert 'id="dataset"' in html and 'id="model"' in html and "<svg" in html and "<polyline" in html
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html and "<b>not bold</b>" not in html
    input_of_first = report["images"][0]["input"]
    flat = "".join(html.split())
    assert f'<ahref="#img-0"title="{report["images"][0]["path"]}"><imgsrc="{input_of_first}"' in flat
    assert "first &lt;i&gt;" in html
    assert 'style="--tile: 112px; grid-template-columns: repeat(2, 112px)' in html  # tiles shown at their size


def test_hostile_names_are_escaped_and_unreadable_files_listed(few_demo_images, tmp_path):
    source = next(few_demo_images.rglob("*.png"))
    # A folder name cannot hold "/", so the closing tag is left out.
    hostile_folder = few_demo_images / '"><script>alert(1)'
    hostile_folder.mkdir()
    shutil.copy(source, hostile_folder / "<img src=x onerror=alert(1)>.png")
    (few_demo_images / "broken <b>.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    outcome = build_report(ReportConfig(few_demo_images, out), load_registry())
    assert outcome.exit_code == 1 and outcome.failed_images == 1
    report = read_report(out)
    [bad] = [image for image in report["images"] if image["status"] == "unreadable"]
    assert bad["path"] == "broken <b>.jpg" and "cannot identify" in bad["error"]
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html and "<img src=x" not in html and "<b>.jpg" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in html
    assert "&#34;&gt;&lt;script&gt;alert(1)" in html


def test_usage_errors_come_before_any_output(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="no image files found"):
        build_report(ReportConfig(empty, out), load_registry())
    with pytest.raises(UsageError, match="unknown plugin nope"):
        build_report(ReportConfig(empty, out, plugins=["nope"]), load_registry())
    assert not out.exists()


def test_bad_target_is_a_usage_error(few_demo_images, tmp_path):
    config = ReportConfig(few_demo_images, tmp_path / "out", params={"saliency": {"target": "unicorn"}})
    with pytest.raises(UsageError, match="saliency.target: target 'unicorn' is not a class"):
        build_report(config, load_registry())


def test_true_and_named_targets(few_demo_images, tmp_path):
    registry = load_registry()
    out = tmp_path / "named"
    name = sorted(p.name for p in few_demo_images.iterdir())[1]
    build_report(ReportConfig(few_demo_images, out, params={"saliency": {"target": name}}), registry)
    captions = {i["results"]["saliency"]["artifacts"][0]["caption"] for i in read_report(out)["images"]}
    assert captions == {f"towards {name}"}
    out = tmp_path / "true"
    build_report(ReportConfig(few_demo_images, out, params={"saliency": {"target": "true"}}), registry)
    for image in read_report(out)["images"]:
        caption = image["results"]["saliency"]["artifacts"][0]["caption"]
        assert caption == f"towards {image['true_class']['name']}"


def test_model_is_left_as_it_was(few_demo_images, tmp_path):
    from nnvis_core.run.sink import MemorySink
    from nnvis_core.runner import execute, prepare

    registry = load_registry()
    config = ReportConfig(few_demo_images, tmp_path / "out")
    plan = prepare(config, registry)
    ctx = plan.ctx
    before = {k: v.clone() for k, v in ctx.module.state_dict().items()}
    sink = MemorySink()
    sink.begin(plan)
    execute(plan, sink)
    assert not ctx.module.training
    assert all(p.grad is None for p in ctx.module.parameters())
    assert all(torch.equal(before[k], v) for k, v in ctx.module.state_dict().items())
    assert not ctx.module._forward_hooks and not ctx.module._backward_hooks
