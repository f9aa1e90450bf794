"""The feature-visualization plugins in a report on the demo model, checked against direct computations."""

from __future__ import annotations

import json
import re
import types
from collections import Counter
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nnvis_core import Plugin, Scope, SemanticDictionary, hookimpl
from nnvis_core.contract.artifacts import ArtifactError
from nnvis_core.demo import DEMO_SPEC, load_demo_model
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_core.runner import UsageError
from nnvis_core.toolkit.featvis.render import normalizer
from nnvis_reports import build_report
from nnvis_reports.reader import read_report

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads(resources.files("nnvis_reports").joinpath("report.schema.json").read_text())
FAST = {"steps": "3", "transforms": "false", "size": "32"}  # pictures are not judged here: keep them cheap


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("NNVIS_CACHE", str(folder))
    return folder


def run(images: Path, out: Path, plugins: list[str], params: dict[str, dict]) -> dict:
    outcome = build_report(ReportConfig(images, out, plugins=plugins, params=params), load_registry())
    report = read_report(out)
    jsonschema.validate(read_report(out, model=None), SCHEMA)
    report["exit_code"] = outcome.exit_code
    return report


def model_input(root: Path, relpath: str) -> torch.Tensor:
    pixels = np.array(Image.open(root / relpath).convert("RGB"))
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    return normalizer(DEMO_SPEC["mean"], DEMO_SPEC["std"], torch.device("cpu"))(x)


def png(out: Path, path: str) -> np.ndarray:
    return np.asarray(Image.open(out / path).convert("RGB"))


def test_model_plugins_and_class_maximization(few_demo_images, tmp_path, cache_dir):
    out = tmp_path / "out"
    report = run(few_demo_images, out, ["class_maximization", "channel_maximization", "filters"], {
        "class_maximization": {"classes": "top:2", "show_plain": "true", **FAST},
        "channel_maximization": {"layers": "features.10,features.11", "per_layer": "2", "show_plain": "true", **FAST},
    })
    assert report["exit_code"] == 0, (report["dataset"], report["model_results"])

    # top:2 = the two classes predicted most often, ties broken by their summed probability
    votes = Counter(image["predictions"][0]["index"] for image in report["images"])
    mass = Counter()
    for image in report["images"]:
        for prediction in image["predictions"]:
            mass[prediction["index"]] += prediction["probability"]
    expected = sorted(votes, key=lambda c: (-votes[c], -mass[c]))[:2]
    gallery, plain, table = report["dataset"]["class_maximization"]["artifacts"]
    assert [row[1] for row in table["rows"]] == expected
    assert len(gallery["tiles"]) == len(plain["tiles"]) == 2 and table["columns"][-1] == "plain: high-frequency share"

    channels = report["model_results"]["channel_maximization"]["artifacts"]
    assert [a["title"] for a in channels] == [
        "channel maximization at features.10", "plain optimization at features.10, for comparison",
        "channel maximization at features.11", "plain optimization at features.11, for comparison"]
    assert "optimized at the ReLU's input features.10" in channels[2]["caption"]
    assert [t["label"].split(":")[0] for t in channels[0]["tiles"]] == ["0", "63"]
    # features.11 is the ReLU after features.10: the same units, so the same (cached) pictures
    for a, b in zip(channels[0]["tiles"], channels[2]["tiles"]):
        np.testing.assert_array_equal(png(out, a["path"]), png(out, b["path"]))
    assert len(list((cache_dir / "featvis").rglob("*.npy"))) == 2

    [filters] = report["model_results"]["filters"]["artifacts"]
    weight = load_demo_model().features[0].weight.detach().numpy()
    expected_tiles = np.round((0.5 + 0.5 * weight / np.abs(weight).max()).transpose(0, 2, 3, 1) * 255)
    assert len(filters["tiles"]) == 16
    for tile, picture in zip(filters["tiles"], expected_tiles):
        np.testing.assert_array_equal(png(out, tile["path"]), picture.astype(np.uint8))


def test_semantic_dictionary_and_activations_match_direct_computation(few_demo_images, tmp_path, cache_dir):
    out = tmp_path / "out"
    report = run(few_demo_images, out, ["semantic_dictionary", "activations"],
                 {"semantic_dictionary": {"top": "3", **FAST}, "activations": {"max_maps": "8"}})
    assert report["exit_code"] == 0
    model = load_demo_model()
    for image in report["images"]:
        x = model_input(few_demo_images, image["path"])
        with torch.no_grad():
            grid = model.features[:17](x)[0]  # features.16: the ReLU after the last conv
        values, units = grid.topk(3, dim=0)
        [dictionary] = image["results"]["semantic_dictionary"]["artifacts"]
        assert dictionary["grid"] == [8, 8]
        np.testing.assert_array_equal(np.load(out / dictionary["raw_units"]), units.permute(1, 2, 0).numpy())
        for cell, cell_units, cell_values in zip(dictionary["cells"], units.flatten(1).T, values.flatten(1).T):
            active = [(int(u), float(v)) for u, v in zip(cell_units, cell_values) if v > 0]
            assert [(c["unit"], pytest.approx(c["activation"], abs=1e-5)) for c in cell] == active
            assert [c["size"] for c in cell] == sorted((c["size"] for c in cell), reverse=True)
        for unit, path in dictionary["thumbnails"].items():
            assert png(out, path).shape == (32, 32, 3)
        totals = [sum(c["activation"] for c in cell) for cell in dictionary["cells"]]
        assert dictionary["selected"] == int(np.argmax(totals))

        metrics = image["results"]["activations"]["metrics"]
        with torch.no_grad():
            for index in (1, 4, 6, 9, 11, 14, 16):
                direct = float((model.features[:index + 1](x) == 0).float().mean())
                assert metrics[f"sparsity:features.{index}"] == pytest.approx(direct, abs=1e-7)
            assert metrics["sparsity"] == pytest.approx(metrics["sparsity:features.9"], abs=1e-7)
        [maps] = image["results"]["activations"]["artifacts"]
        assert [t["label"] for t in maps["tiles"]] == ["0", "9", "18", "27", "36", "45", "54", "63"]

    # every picture was rendered once for the folder; later images reuse it
    rendered = [rendered_now(i) for i in report["images"]]
    shown = set().union(*(i["results"]["semantic_dictionary"]["artifacts"][0]["thumbnails"] for i in report["images"]))
    assert sum(rendered) == len(shown)


def rendered_now(image: dict) -> int:
    """The number of dictionary pictures rendered for this image, from its caption."""
    caption = image["results"]["semantic_dictionary"]["artifacts"][0]["caption"]
    return int(re.search(r"(\d+) rendered now", caption).group(1))


def test_dictionary_pictures_come_from_the_disk_cache_on_a_second_run(few_demo_images, tmp_path, cache_dir):
    params = {"semantic_dictionary": {"top": "2", **FAST}}
    first = run(few_demo_images, tmp_path / "one", ["semantic_dictionary"], params)
    stored = sorted(p.name for p in (cache_dir / "featvis").rglob("*.npy"))
    second = run(few_demo_images, tmp_path / "two", ["semantic_dictionary"], params)
    assert stored and sorted(p.name for p in (cache_dir / "featvis").rglob("*.npy")) == stored
    assert all(rendered_now(i) == 0 for i in second["images"])
    one = first["images"][0]["results"]["semantic_dictionary"]["artifacts"][0]
    two = second["images"][0]["results"]["semantic_dictionary"]["artifacts"][0]
    for unit in one["thumbnails"]:
        np.testing.assert_array_equal(png(tmp_path / "one", one["thumbnails"][unit]),
                                      png(tmp_path / "two", two["thumbnails"][unit]))
    # other settings are other pictures
    third = run(few_demo_images, tmp_path / "three", ["semantic_dictionary"],
                {"semantic_dictionary": {"top": "2", **FAST, "steps": "4"}})
    assert rendered_now(third["images"][0]) > 0


def test_a_render_budget_draws_the_strongest_channels_first_and_leaves_the_rest_for_later(
        few_demo_images, tmp_path, cache_dir):
    out = tmp_path / "out"
    report = run(few_demo_images, out, ["semantic_dictionary"],
                 {"semantic_dictionary": {"top": "3", "renders": "2", **FAST}})
    assert report["exit_code"] == 0
    drawn: set[int] = set()
    for image in report["images"]:
        [dictionary] = image["results"]["semantic_dictionary"]["artifacts"]
        active = {c["unit"] for cell in dictionary["cells"] for c in cell}
        pictured = {int(unit) for unit in dictionary["thumbnails"]}
        pending = set(dictionary["pending"])
        assert pictured | pending == active and not pictured & pending
        assert rendered_now(image) == min(2, len(active - drawn))
        assert active & drawn <= pictured  # every earlier render is reused
        peak = {u: max(c["activation"] for cell in dictionary["cells"] for c in cell if c["unit"] == u) for u in active}
        new = pictured - drawn
        if new and pending:  # the budget went to the strongest channels not drawn before
            assert min(peak[u] for u in new) >= max(peak[u] for u in pending)
        if pending:
            assert f"{len(pending)} left for later (renders=2 per image)" in dictionary["caption"]
        drawn |= pictured
    html = (out / "index.html").read_text() + "".join(p.read_text() for p in out.glob("pages/*.html"))
    assert "not rendered" in html
    # a second run renders 2 more per image, from the disk cache onwards
    again = run(few_demo_images, tmp_path / "again", ["semantic_dictionary"],
                {"semantic_dictionary": {"top": "3", "renders": "0", **FAST}})
    assert all(not i["results"]["semantic_dictionary"]["artifacts"][0]["pending"] for i in again["images"])
    assert sum(rendered_now(i) for i in again["images"]) == len(
        {c["unit"] for i in report["images"] for cell in i["results"]["semantic_dictionary"]["artifacts"][0]["cells"]
         for c in cell}) - len(drawn)


def test_cache_off_writes_nothing(few_demo_images, tmp_path, cache_dir):
    run(few_demo_images, tmp_path / "out", ["semantic_dictionary", "channel_maximization"],
        {"semantic_dictionary": {"cache": "false", "top": "1", **FAST},
         "channel_maximization": {"cache": "false", "layers": "features.5", "per_layer": "1", **FAST}})
    assert not cache_dir.exists()


def test_bad_requests_are_one_line_errors_and_the_report_goes_on(few_demo_images, tmp_path, cache_dir):
    report = run(few_demo_images, tmp_path / "out", ["class_maximization", "channel_maximization", "filters"], {
        "class_maximization": {"classes": "circle,hexagon", **FAST},
        "channel_maximization": {"layers": "features.5", "channels": "2,40", **FAST},
        "filters": {"layer": "features.1"},
    })
    assert report["exit_code"] == 1
    assert "'hexagon' is not a class of this model" in report["dataset"]["class_maximization"]["error"]
    assert report["model_results"]["channel_maximization"]["error"] == \
        "LayerError: layer features.5 has 32 channels (0-31); asked for [40]"
    assert report["model_results"]["filters"]["error"] == "LayerError: layer 'features.1' is a ReLU, not a Conv2d"
    with pytest.raises(UsageError, match="class_maximization.classes: top:K needs a positive whole number K"):
        run(few_demo_images, tmp_path / "bad", ["class_maximization"], {"class_maximization": {"classes": "top:0"}})
    with pytest.raises(UsageError, match="channel_maximization.channels"):
        run(few_demo_images, tmp_path / "bad", ["channel_maximization"], {"channel_maximization": {"channels": "a"}})


def test_semantic_dictionary_artifact_checks_its_data():
    image = np.zeros((8, 8, 3), np.uint8)
    units = np.array([[[1, 2]]])
    SemanticDictionary("ok", image, units, np.array([[[2.0, 0.0]]]), {1: image}).validate()
    with pytest.raises(ArtifactError, match="no thumbnail for units \\[2\\]"):
        SemanticDictionary("d", image, units, np.array([[[2.0, 1.0]]]), {1: image}).validate()
    with pytest.raises(ArtifactError, match="do not match units"):
        SemanticDictionary("d", image, units, np.ones((1, 1, 3)), {1: image, 2: image}).validate()
    with pytest.raises(ArtifactError, match="integer"):
        SemanticDictionary("d", image, units.astype(float), np.ones((1, 1, 2)), {1: image, 2: image}).validate()
    with pytest.raises(ArtifactError, match="NaN"):
        SemanticDictionary("d", image, units, np.full((1, 1, 2), np.nan), {1: image, 2: image}).validate()


class HostileDictionary(Plugin):
    name = "hostile-dictionary"
    title = "Hostile dictionary"
    description = "A dictionary whose label tries to end the script block."
    scope = Scope.IMAGE
    label = "</script><script>alert(1)</script>"

    def run_image(self, ctx, item, params):
        units = np.array([[[0, 1], [1, 0]]])
        picture = np.zeros((4, 4, 3), np.uint8)
        return [SemanticDictionary("d <b>", item.pixels, units, np.array([[[2.0, 1.0], [0.5, 0.0]]]),
                                   {0: picture, 1: picture}, unit_label=self.label)]


def test_dictionary_data_cannot_break_out_of_the_page(few_demo_images, tmp_path):
    holder = types.SimpleNamespace(nnvis_register_plugins=hookimpl(lambda register: register(HostileDictionary())))
    out = tmp_path / "out"
    build_report(ReportConfig(few_demo_images, out, plugins=["hostile-dictionary"]),
                 load_registry(extra=[("test", holder)]))
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html and "d <b>" not in html
    blocks = re.findall(r'<script type="application/json" class="dictionary-data">(.*?)</script>', html, re.S)
    assert len(blocks) == 6
    data = json.loads(blocks[0])
    assert data["unit_label"] == HostileDictionary.label
    assert data["cells"] == [[{"unit": 0, "activation": 2.0, "size": 96}, {"unit": 1, "activation": 1.0, "size": 60}],
                             [{"unit": 1, "activation": 0.5, "size": 42}]]
