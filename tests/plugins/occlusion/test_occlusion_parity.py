"""The probability-drop map equals Captum 0.9.0's Occlusion with the same window, stride and
baseline, on the trained demo net and on a randomly initialised torchvision resnet18.

Captum's forward function is the softmax of the model; its window covers all channels
(so its map is the same in every channel). Both engines are compared: batched
inference (the same arithmetic as Captum) and incremental inference, which runs
channels-last and so sums in another order: in float32 its drops differ from
Captum's by float32 rounding of the probabilities (below 1e-7 here), which on the
random resnet18, whose drops are about 1e-3, is 2e-5 of the largest drop. In float64
the incremental map equals Captum's to 1e-6 of the largest drop (Captum divides its
sums in float32 at the end, so its float64 map carries float32 rounding).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from nnvis_core.demo import DEMO_SPEC, load_demo_model
from nnvis_core.models.loaded import IMAGENET_MEAN, IMAGENET_STD
from nnvis_core.torchvision_compat import torchvision_models
from nnvis_plugins import occlusion
from nnvis_plugins.occlusion.windows import fill_values

captum_attr = pytest.importorskip("captum.attr")

SIZE = 64
CASES = [("zero", 9, 3), ("blur", 10, 4), ("grey", 16, 6), ("mean", 12, 12)]


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"demo": (load_demo_model(), DEMO_SPEC["mean"], DEMO_SPEC["std"]),
            "resnet18": (torchvision_models().resnet18(weights=None).eval(), IMAGENET_MEAN, IMAGENET_STD)}


def captum_drop(model, x, target, window, stride, fill) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        drop = captum_attr.Occlusion(lambda z: torch.softmax(model(z), dim=1)).attribute(
            x, target=target, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
            baselines=fill, perturbations_per_eval=32)
    assert torch.equal(drop[:, :1].expand_as(drop), drop)  # one map, repeated per channel
    return drop[:, :1]


def _occluder(kind, mean, std):
    return occlusion.grey(mean, std) if kind == "grey" else kind


@pytest.mark.parametrize("name", ["demo", "resnet18"])
@pytest.mark.parametrize("kind, window, stride", CASES)
def test_drop_map_equals_captums_occlusion(models, name, kind, window, stride):
    model, mean, std = models[name]
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(window))
    with torch.no_grad():
        target = int(model(x).argmax())
    occluder = _occluder(kind, mean, std)
    theirs = captum_drop(model, x, target, window, stride, fill_values(occluder, x, window))
    scale = float(theirs.abs().max())
    assert scale > 1e-5, "degenerate comparison: occlusion changes nothing"
    for engine in ("batched", "incremental"):
        ours = occlusion.attribute(model, x, target, window=window, stride=stride, occluder=occluder, engine=engine)
        assert ours.shape == theirs.shape
        error = float((ours - theirs).abs().max())
        assert error <= 1e-5, (engine, error)
        if engine == "batched" or name == "demo":
            assert error <= 1e-5 * scale, (engine, error / scale)
        else:
            assert error <= 1e-4 * scale, (engine, error / scale)


@pytest.mark.parametrize("kind, window, stride", CASES[1:2])
def test_incremental_drop_map_equals_captums_in_float64(models, kind, window, stride):
    _, mean, std = models["resnet18"]
    model = copy.deepcopy(models["resnet18"][0]).double()
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(window), dtype=torch.float64)
    target = 7
    occluder = _occluder(kind, mean, std)
    theirs = captum_drop(model, x, target, window, stride, fill_values(occluder, x, window))
    ours = occlusion.attribute(model, x, target, window=window, stride=stride, occluder=occluder,
                               engine="incremental")
    assert ours.dtype == torch.float64
    assert float((ours - theirs).abs().max()) <= 1e-6 * float(theirs.abs().max())
