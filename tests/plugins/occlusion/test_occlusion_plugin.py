"""The occlusion plugin through the plugin contract and the report, and what it finds on the
bundled demo images: the object matters more than the background."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nnvis_core import CategoricalMap, Heatmap
from nnvis_core.contract.artifacts import as_result
from nnvis_core.contract.context import ImageItem, RunContext
from nnvis_core.contract.params import ParamError, resolve_params
from nnvis_core.demo import CLASS_NAMES, DEMO_SPEC, load_demo_model
from nnvis_core.images import ImageRecord
from nnvis_core.models.loaded import LoadedModel, Preprocess
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_core.toolkit import model_state
from nnvis_plugins import occlusion
from nnvis_reports import build_report
from nnvis_reports.reader import read_report

ROOT = Path(__file__).resolve().parents[3] / "examples" / "demo"


def demo_set() -> list[tuple[Path, np.ndarray, np.ndarray, int]]:
    """(path, pixels, mask, true class) of every bundled demo image."""
    items = []
    for path in sorted((ROOT / "images").glob("*/*.png")):
        pixels = np.array(Image.open(path).convert("RGB"))
        mask = np.array(Image.open(ROOT / "masks" / path.relative_to(ROOT / "images")).convert("L")) > 127
        items.append((path, pixels, mask, CLASS_NAMES.index(path.parent.name)))
    return items


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture(scope="module")
def ctx():
    preprocess = Preprocess(None, None, DEMO_SPEC["mean"], DEMO_SPEC["std"])
    loaded = LoadedModel(load_demo_model(), "demo", "shipped", list(CLASS_NAMES), preprocess, "test")
    return RunContext(loaded, torch.device("cpu"), seed=0, batch_size=16)


def make_item(ctx, path, pixels, mask, true_class) -> ImageItem:
    tensor = ctx.model.preprocess.normalize(pixels)
    with torch.no_grad():
        probabilities = torch.softmax(ctx.module(tensor[None]), 1)[0]
    record = ImageRecord(0, path, str(path.relative_to(ROOT / "images")), path.parent.name)
    return ImageItem(record, pixels, tensor, true_class, probabilities, mask)


def run(registry, ctx, item, **given):
    plugin = registry.plugins["occlusion"].item
    return as_result(plugin.run_image(ctx, item, resolve_params("occlusion", plugin.params, given)))


def test_the_plugin_shows_figure_7_and_scores_the_drop_map(registry, ctx):
    path, pixels, mask, true_class = demo_set()[5]
    item = make_item(ctx, path, pixels, mask, true_class)
    before = model_state(ctx.module)
    result = run(registry, ctx, item)
    assert model_state(ctx.module) == before
    drop, probability, labels, feature, curves = result.artifacts
    assert curves.kind == "chart" and set(curves.series) == {"deletion", "insertion"}
    assert isinstance(drop, Heatmap) and drop.title == "occlusion" and drop.values.shape == (64, 64)
    assert drop.caption.startswith(f"towards {CLASS_NAMES[item.predicted]}")
    assert "grey 9x9 square, stride 3, 400 positions, incremental inference" in drop.caption
    assert isinstance(probability, Heatmap) and probability.value_range == (0.0, 1.0)
    assert 0 <= probability.values.min() and probability.values.max() <= 1
    assert isinstance(labels, CategoricalMap) and set(labels.legend) == set(np.unique(labels.categories).tolist())
    assert all(labels.legend[c] == CLASS_NAMES[c] for c in labels.legend)
    assert isinstance(feature, Heatmap) and "of features.16" in feature.title
    metrics = result.metrics
    for key in ("deletion_auc", "insertion_auc", "mask_share", "mask_area", "mask_gain", "max_probability_drop",
                "class_change_share"):
        assert key in metrics, key
    assert metrics["insertion_auc"] > metrics["deletion_auc"]
    # the plugin's map is the function's map with the plugin's grey
    maps = occlusion.occlusion_maps(ctx.module, ctx.input(item), item.predicted, layer=None,
                                    occluder=occlusion.grey(DEMO_SPEC["mean"], DEMO_SPEC["std"]))
    assert np.allclose(drop.values, maps.drop_map(), atol=1e-6)
    batched = run(registry, ctx, item, engine="batched", faithfulness_steps=0)
    assert "batched inference" in batched.artifacts[0].caption
    assert np.abs(batched.artifacts[0].values - drop.values).max() <= 1e-5


def test_parameters(registry, ctx):
    path, pixels, mask, true_class = demo_set()[0]
    item = make_item(ctx, path, pixels, None, true_class)
    result = run(registry, ctx, item, window=16, stride=16, occluder="blur", target="true", channel=3,
                 layer="features.13", faithfulness_steps=0)
    drop, _, _, feature = result.artifacts
    assert "blur 16x16 square, stride 16, 16 positions" in drop.caption
    assert drop.caption.startswith(f"towards {CLASS_NAMES[true_class]}")
    assert feature.title == "occlusion: feature map 3 of features.13"
    assert "mask_share" not in result.metrics and "deletion_auc" not in result.metrics
    plugin = registry.plugins["occlusion"].item
    for bad in ({"occluder": "purple"}, {"window": -1}, {"engine": "fast"}, {"channel": -2}):
        with pytest.raises(ParamError):
            resolve_params("occlusion", plugin.params, bad)
    with pytest.raises(occlusion.OcclusionError, match="stride 40 must be from 1 to the window 16"):
        run(registry, ctx, item, window=16, stride=40)


def test_occluding_the_object_costs_more_than_occluding_background():
    """Over the bundled set, windows mostly on the object (at least half its pixels) lower the
    true-class probability more than windows of the same size wholly on background.

    With the image's mean colour as occluder this holds for every image. With Zeiler &
    Fergus's grey it holds on average (grey squares on a textured background add edges of
    their own, and on this shapes data set a square is a class): 32 of the 40 images.
    """
    model = load_demo_model()
    grey = occlusion.grey(DEMO_SPEC["mean"], DEMO_SPEC["std"])
    on_object = {"mean": [], "grey": []}
    on_background = {"mean": [], "grey": []}
    for _, pixels, mask, true_class in demo_set():
        x = Preprocess(None, None, DEMO_SPEC["mean"], DEMO_SPEC["std"]).normalize(pixels)[None]
        for kind, occluder in (("mean", "mean"), ("grey", grey)):
            maps = occlusion.occlusion_maps(model, x, true_class, occluder=occluder, layer=None)
            windows = maps.windows
            tops, lefts = windows.corners()
            share = np.array([mask[top:top + windows.window, left:left + windows.window].mean()
                              for top, left in zip(tops.tolist(), lefts.tolist())]).reshape(windows.shape)
            assert (share >= 0.5).any() and (share == 0).any()
            on_object[kind].append(maps.drop[share >= 0.5].mean())
            on_background[kind].append(maps.drop[share == 0].mean())
    assert len(on_object["mean"]) == 40
    mean_object, mean_background = np.array(on_object["mean"]), np.array(on_background["mean"])
    assert (mean_object > mean_background).all(), np.flatnonzero(mean_object <= mean_background)
    grey_object, grey_background = np.array(on_object["grey"]), np.array(on_background["grey"])
    assert grey_object.mean() > 2 * grey_background.mean()
    assert (grey_object > grey_background).mean() >= 0.75


def test_in_a_report_with_masks(few_demo_images, tmp_path):
    out = tmp_path / "out"
    config = ReportConfig(few_demo_images, out, masks=ROOT / "masks", plugins=["occlusion"],
                          params={"occlusion": {"faithfulness_steps": "16"}}, batch_size=8)
    outcome = build_report(config, load_registry())
    assert outcome.exit_code == 0
    report = read_report(out)
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(resources.files("nnvis_reports").joinpath("report.schema.json").read_text())
    jsonschema.validate(read_report(out, model=None), schema)
    summary = {p["name"]: p["metrics_summary"] for p in report["plugins"]}["occlusion"]
    assert summary["deletion_auc"]["n"] == len(report["images"]) == 6
    assert summary["insertion_auc"]["mean"] > summary["deletion_auc"]["mean"]
    assert summary["mask_share"]["mean"] > summary["mask_area"]["mean"]
    for image in report["images"]:
        kinds = [a["kind"] for a in image["results"]["occlusion"]["artifacts"]]
        assert kinds == ["heatmap", "heatmap", "categorical", "heatmap", "chart"]
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "Occlusion sensitivity" in html and "incremental inference" in html


def test_a_model_without_a_readable_layer_gets_the_maps_without_the_panel():
    import nnvis

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 4))
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    explained = nnvis.explain(mlp, image, "occlusion", preprocess={"resize": 32, "crop": 32},
                              class_names=list("abcd"), device="cpu", window=8, stride=8)
    assert explained.map.shape == (32, 32) and float(explained.map.abs().sum()) > 0
    titles = [artifact.title for artifact in explained.result.artifacts]
    assert not any("feature map" in title for title in titles)
    assert "no feature-map panel: " in explained.caption
    with pytest.raises(nnvis.UsageError, match="occlusion.layer"):  # a layer the user names must exist
        nnvis.explain(mlp, image, "occlusion", preprocess={"resize": 32, "crop": 32}, class_names=list("abcd"),
                      device="cpu", layer="nope")
