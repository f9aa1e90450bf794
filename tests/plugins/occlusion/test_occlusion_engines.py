"""How occlusion picks its engine, and the opt-in approximate engine: `auto` runs whole images
where the incremental plan cannot reuse work (a ViT: attention mixes every token), the caption
says which engine ran and why, and the approximate engine reports its own error exactly as an
independent comparison with exact inference measures it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nnvis_core.demo import CLASS_NAMES, DEMO_SPEC, load_demo_model
from nnvis_core.torchvision_compat import torchvision_models
from nnvis_plugins import occlusion
from nnvis_plugins.occlusion.choice import AUTO_WORK
from nnvis_plugins.occlusion.method import checked_positions
from nnvis_plugins.occlusion.windows import OcclusionError

WINDOW, STRIDE = 12, 6  # 10 x 10 positions on the 64-pixel demo images


@pytest.fixture(scope="module")
def demo():
    return load_demo_model()


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return torchvision_models().VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                  hidden_dim=32, mlp_dim=64).eval()


@pytest.fixture(scope="module")
def exact(demo, image):
    return occlusion.occlusion_maps(demo, image, window=WINDOW, stride=STRIDE, engine="incremental")


def test_auto_runs_whole_images_on_a_vit_and_says_why(vit):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    maps = occlusion.occlusion_maps(vit, x, window=8, stride=4, layer=None)
    assert maps.engine == "batched" and maps.work is None
    assert maps.note.startswith("incremental inference skipped: it would redo ")
    assert "encoder.layers.encoder_layer_0.self_attention (MultiheadAttention: attention mixes tokens" in maps.note
    share = float(maps.note.split("redo ")[1].split("%")[0]) / 100
    assert share > AUTO_WORK
    assert maps.describe_engine() == f"batched inference ({maps.note})"
    # forced, the incremental engine still runs it, and agrees
    forced = occlusion.occlusion_maps(vit, x, window=8, stride=4, layer=None, engine="incremental")
    assert forced.engine == "incremental" and forced.work == pytest.approx(share, abs=0.005)
    assert np.abs(forced.probability - maps.probability).max() <= 1e-5


def test_auto_traces_a_model_once_per_geometry_not_once_per_image(monkeypatch):
    from nnvis_plugins.occlusion import method

    traced = []
    real = method.IncrementalRunner
    monkeypatch.setattr(method, "IncrementalRunner", lambda *args, **kwargs: traced.append(1) or real(*args, **kwargs))
    model = torchvision_models().VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                   hidden_dim=32, mlp_dim=64).eval()  # a fresh one: nothing decided
    images = [torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    first, *others = [occlusion.occlusion_maps(model, x, window=8, stride=4, layer=None) for x in images]
    assert len(traced) == 1  # the first image's trace decided for the others
    assert all(maps.engine == "batched" and maps.note == first.note for maps in others)
    occlusion.occlusion_maps(model, images[0], window=16, stride=4, layer=None)  # another window: traced again
    assert len(traced) == 2
    again = occlusion.occlusion_maps(model, images[1], window=8, stride=4, layer=None, engine="batched")
    assert np.array_equal(again.probability, others[0].probability)


def test_auto_runs_the_demo_convnet_incrementally_and_says_how_much_work(demo, image, exact):
    maps = occlusion.occlusion_maps(demo, image, window=WINDOW, stride=STRIDE)
    assert maps.engine == "incremental" and maps.note == ""
    assert 0 < maps.work < AUTO_WORK and maps.work == exact.work
    assert maps.describe_engine() == f"incremental inference ({maps.work:.0%} of a whole image's work per position)"


def test_approximate_with_a_threshold_that_keeps_everything_is_exact(demo, image, exact):
    maps = occlusion.occlusion_maps(demo, image, window=WINDOW, stride=STRIDE, engine="approximate", threshold=1.0)
    assert maps.engine == "approximate" and maps.threshold == 1.0 and maps.work == pytest.approx(exact.work)
    assert np.abs(maps.probability - exact.probability).max() <= 1e-5
    assert np.abs(maps.feature - exact.feature).max() <= 1e-5 * np.abs(exact.feature).max()
    assert np.array_equal(maps.top_class, exact.top_class)
    assert maps.deviation.max_abs <= 1e-5 and maps.deviation.relative_l2 <= 1e-5


def test_approximate_reports_the_error_an_independent_comparison_measures(demo, image, exact):
    maps = occlusion.occlusion_maps(demo, image, window=WINDOW, stride=STRIDE, engine="approximate",
                                    threshold=0.4, check=1.0)
    assert maps.work < exact.work  # it skips work the exact plan does
    deviation = maps.deviation
    assert deviation.positions.tolist() == list(range(maps.windows.count))
    error = maps.drop - exact.drop
    assert deviation.max_abs > 1e-4  # a real approximation
    assert deviation.max_abs == pytest.approx(np.abs(error).max(), rel=1e-4, abs=1e-7)
    assert deviation.relative_l2 == pytest.approx(np.linalg.norm(error) / np.linalg.norm(exact.drop), rel=1e-4)
    assert deviation.top_class_agreement == pytest.approx((maps.top_class == exact.top_class).mean())
    text = maps.describe_engine()
    assert text.startswith("approximate inference (projective-field threshold 0.4; ")
    assert f"against exact inference at 100 of 100 positions: max error {deviation.max_abs:.2g}" in text
    # checking a share of the positions: the same figures over those positions
    sampled = occlusion.occlusion_maps(demo, image, window=WINDOW, stride=STRIDE, engine="approximate",
                                       threshold=0.4, check=0.25, layer=None)
    index = sampled.deviation.positions
    assert index.tolist() == checked_positions(100, 0.25).tolist() and len(index) == 25
    assert np.allclose(sampled.probability, maps.probability, atol=1e-6)
    assert sampled.deviation.max_abs == pytest.approx(np.abs(error.ravel()[index]).max(), rel=1e-4, abs=1e-7)
    assert sampled.deviation.relative_l2 == pytest.approx(
        np.linalg.norm(error.ravel()[index]) / np.linalg.norm(exact.drop.ravel()[index]), rel=1e-4)


def test_approximate_refuses_a_vit_in_one_line(vit):
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(OcclusionError, match="approximate occlusion cannot run on VisionTransformer: it would "
                                             "redo") as error:
        occlusion.occlusion_maps(vit, x, window=8, stride=4, engine="approximate")
    assert "\n" not in str(error.value)
    for bad, message in ((0.0, "threshold 0.0 must be above 0"), (1.5, "threshold 1.5 must be above 0")):
        with pytest.raises(OcclusionError, match=message):
            occlusion.occlusion_maps(load_demo_model(), torch.randn(1, 3, 64, 64), window=32, stride=32,
                                     engine="approximate", threshold=bad)


def test_the_plugin_caption_and_metrics_name_the_engine_and_the_error(demo):
    from nnvis_core.contract.artifacts import as_result
    from nnvis_core.contract.context import ImageItem, RunContext
    from nnvis_core.contract.params import resolve_params
    from nnvis_core.images import ImageRecord
    from nnvis_core.models.loaded import LoadedModel, Preprocess
    from nnvis_core.run.registry import load_registry

    preprocess = Preprocess(None, None, DEMO_SPEC["mean"], DEMO_SPEC["std"])
    ctx = RunContext(LoadedModel(demo, "demo", "shipped", list(CLASS_NAMES), preprocess, "test"),
                     torch.device("cpu"), seed=0, batch_size=16)
    pixels = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    tensor = preprocess.normalize(pixels)
    with torch.no_grad():
        probabilities = torch.softmax(demo(tensor[None]), 1)[0]
    item = ImageItem(ImageRecord(0, Path("x.png"), "x.png", None), pixels, tensor, None, probabilities, None)
    plugin = load_registry().plugins["occlusion"].item
    for engine, expected in (("auto", "incremental inference ("), ("approximate", "approximate inference (")):
        params = resolve_params("occlusion", plugin.params,
                                {"engine": engine, "window": "16", "stride": "8", "faithfulness_steps": "0"})
        result = as_result(plugin.run_image(ctx, item, params))
        caption = result.artifacts[0].caption
        assert expected in caption and "of a whole image's work per position" in caption
        if engine == "approximate":
            assert "projective-field threshold 0.5" in caption and "against exact inference at 4 of 49" in caption
            assert 0 <= result.metrics["approximate_max_abs_error"] <= 1
            assert result.metrics["approximate_relative_l2_error"] >= 0
        else:
            assert not any(key.startswith("approximate") for key in result.metrics)
