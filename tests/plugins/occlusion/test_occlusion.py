"""Occlusion sensitivity: window geometry, the maps, the engines, the memory budget and failures.

Parity with Captum is in test_occlusion_parity.py; the plugin and the demo set in
test_occlusion_plugin.py.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnvis_core.demo import DemoNet, load_demo_model
from nnvis_core.toolkit import AttributionError, model_state
from nnvis_core.torchvision_compat import torchvision_models
from nnvis_plugins import occlusion
from nnvis_plugins.occlusion.incremental import FULL
from nnvis_plugins.occlusion.patches import Region
from nnvis_plugins.occlusion.runners import IncrementalRunner, occluded_images
from nnvis_plugins.occlusion.windows import OcclusionError, Windows, default_stride, default_window, fill_values

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


# ---------------------------------------------------------------- geometry

def test_windows_are_placed_like_captums():
    # ceil((size - window) / stride) + 1 starts, the last one cut at the border
    assert Windows(7, 7, 3, 2).row_starts.tolist() == [0, 2, 4]
    assert Windows(7, 7, 3, 3).row_starts.tolist() == [0, 3, 6]
    assert Windows(10, 7, 3, 3).shape == (4, 3)
    rows, cols = Windows(7, 7, 3, 3).coverage()
    assert rows[2].tolist() == [0, 0, 0, 0, 0, 0, 1]  # the cut window covers one row


def test_defaults_give_a_seventh_of_the_side_and_at_least_16_positions():
    assert default_window(64, 64) == 9 and default_window(224, 224) == 32
    for size in (32, 48, 64, 96, 128, 224, 299, 512):
        window = default_window(size, size)
        stride = default_stride(size, size, window)
        windows = Windows(size, size, window, stride)
        assert min(windows.shape) >= 16, size
        if stride < window:  # and the stride is the largest that does so
            assert min(Windows(size, size, window, stride + 1).shape) < 16, size


def test_spread_is_the_mean_over_the_windows_covering_each_pixel():
    windows = Windows(3, 3, 2, 1)  # four overlapping 2x2 windows
    grid = np.array([[1.0, 2.0], [3.0, 4.0]])
    spread = windows.spread(grid)
    assert spread[0, 0] == 1.0 and spread[0, 2] == 2.0 and spread[2, 0] == 3.0 and spread[2, 2] == 4.0
    assert spread[1, 1] == pytest.approx(2.5) and spread[0, 1] == pytest.approx(1.5)


def test_grids_become_maps_by_the_nearest_window_centre():
    windows = Windows(6, 6, 2, 2)  # centres at 0.5, 2.5, 4.5
    grid = np.arange(9).reshape(3, 3)
    pixels = windows.to_pixels(grid)
    assert pixels[:, 0].tolist() == [0, 0, 3, 3, 6, 6]
    assert pixels[0].tolist() == [0, 0, 1, 1, 2, 2]


def test_occluded_images_fill_exactly_the_window():
    image = torch.zeros(1, 2, 7, 7)
    fill = torch.ones(1, 2, 7, 7)
    windows = Windows(7, 7, 3, 3)
    images = occluded_images(image, fill, windows, torch.arange(windows.count))
    assert images.shape == (9, 2, 7, 7)
    assert images[0, :, :3, :3].eq(1).all() and images[0].sum() == 2 * 9
    assert images[8, :, 6, 6].eq(1).all() and images[8].sum() == 2  # the cut corner window


def test_fill_values():
    x = torch.randn(1, 3, 16, 16)
    assert fill_values("zero", x, 4).eq(0).all()
    assert torch.allclose(fill_values("mean", x, 4)[0, :, 5, 5], x.mean(dim=(0, 2, 3)))
    blurred = fill_values("blur", x, 4)
    assert blurred.shape == x.shape and blurred.std() < x.std()
    grey = occlusion.grey([0.5, 0.25, 0.0], [0.5, 0.25, 1.0])
    assert grey.flatten().tolist() == [0.0, 1.0, 0.5]
    assert torch.equal(fill_values(grey, x, 4)[0, :, 3, 3], grey.flatten())


@pytest.mark.parametrize("call, message", [
    (lambda: Windows(64, 64, 0, 1), "window 0 must be from 1"),
    (lambda: Windows(64, 64, 8, 9), "stride 9 must be from 1 to the window 8"),
    (lambda: fill_values("purple", torch.zeros(1, 3, 8, 8), 2), "unknown occluder 'purple'"),
    (lambda: fill_values("grey", torch.zeros(1, 3, 8, 8), 2), "needs the model's normalization"),
    (lambda: fill_values(torch.zeros(4, 1, 1), torch.zeros(1, 3, 8, 8), 2), "does not broadcast"),
])
def test_bad_arguments_fail_with_one_line(call, message):
    with pytest.raises(OcclusionError, match=message) as error:
        call()
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- the maps

@pytest.fixture(scope="module")
def demo():
    return load_demo_model()


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))


def _forward(model, images, layer):
    """Class probabilities and the layer's output, from the model's own forward pass."""
    captured = {}
    hook = layer.register_forward_hook(lambda m, a, out: captured.__setitem__("out", out))
    try:
        with torch.no_grad():
            return torch.softmax(model(images), 1), captured["out"]
    finally:
        hook.remove()


def test_maps_follow_their_definition(demo, image):
    """Every grid entry is what the model says about the image with that one window filled."""
    maps = occlusion.occlusion_maps(demo, image, 2, window=16, stride=12, occluder="mean", layer="features.13")
    windows = maps.windows
    assert maps.probability.shape == maps.top_class.shape == maps.feature.shape == windows.shape == (5, 5)
    fill = fill_values("mean", image, 16)
    probs, activation = _forward(demo, occluded_images(image, fill, windows, torch.arange(25)), demo.features[13])
    base, base_activation = _forward(demo, image, demo.features[13])
    base = base[0]
    strongest = int(base_activation[0].sum(dim=(1, 2)).argmax())
    assert maps.channel == strongest and maps.layer == "features.13"
    assert np.allclose(maps.probability.ravel(), probs[:, 2].numpy(), atol=1e-6)
    assert np.array_equal(maps.top_class.ravel(), probs.argmax(1).numpy())
    assert np.allclose(maps.feature.ravel(), activation[:, strongest].sum(dim=(1, 2)).numpy(), rtol=1e-5)
    assert maps.base_probability == pytest.approx(float(base[2]), abs=1e-6)
    assert maps.base_feature == pytest.approx(float(base_activation[0, strongest].sum()), rel=1e-5)
    assert np.allclose(maps.drop, maps.base_probability - maps.probability)
    assert maps.drop_map().shape == (64, 64) and maps.pixels(maps.top_class).shape == (64, 64)


def test_defaults_target_the_prediction_and_read_the_rectified_last_conv(demo, image):
    maps = occlusion.occlusion_maps(demo, image)
    with torch.no_grad():
        predicted = int(demo(image).argmax())
    assert maps.target == predicted == maps.base_class
    assert maps.windows.window == 9 and maps.windows.shape == (20, 20)
    assert maps.layer == "features.16" and maps.engine == "incremental" and maps.note == ""
    assert occlusion.occlusion_maps(demo, image, layer=None, window=32, stride=32).feature is None


def test_the_model_is_left_as_found(demo, image):
    before = model_state(demo)
    occlusion.occlusion_maps(demo, image, window=16, stride=8)
    with pytest.raises(OcclusionError):
        occlusion.occlusion_maps(demo, image, window=16, stride=8, channel=500)
    assert model_state(demo) == before


@pytest.mark.parametrize("kwargs, message", [
    ({"target": 8}, "target 8 is not a class index of a 8-class model"),
    ({"channel": 128}, "channel 128 is not one of the 128"),
    ({"engine": "fast"}, "unknown engine 'fast'"),
    ({"layer": "classifier.2"}, r"layer classifier.2 gives \(1, 8\), not \(N, C, H, W\) feature maps"),
])
def test_bad_maps_arguments(demo, image, kwargs, message):
    kwargs = {"window": 32, "stride": 32, **kwargs}
    with pytest.raises(OcclusionError, match=message):
        occlusion.occlusion_maps(demo, image, **kwargs)


def test_memory_budget_sets_the_batch_and_not_the_result(demo, image):
    small = occlusion.occlusion_maps(demo, image, window=12, stride=4, memory_mb=1)
    large = occlusion.occlusion_maps(demo, image, window=12, stride=4, memory_mb=4096)
    assert 1 <= small.batch_size < large.batch_size == small.windows.count
    assert np.allclose(small.probability, large.probability, atol=1e-6)
    assert np.allclose(small.feature, large.feature, rtol=1e-5)
    tiny = occlusion.occlusion_maps(demo, image, window=12, stride=4, engine="batched", memory_mb=1)
    assert tiny.batch_size < small.windows.count  # whole images need more memory per position


def test_attribute_is_one_drop_map_per_image(demo):
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    maps = occlusion.attribute(demo, images, [1, 4], window=16, stride=8)
    assert maps.shape == (2, 1, 64, 64)
    second = occlusion.occlusion_maps(demo, images[1:], 4, window=16, stride=8, layer=None)
    assert torch.allclose(maps[1, 0], torch.from_numpy(second.drop_map()).float())
    with pytest.raises(OcclusionError, match="3 targets for 2 inputs"):
        occlusion.attribute(demo, images, [1, 2, 3])


# ---------------------------------------------------------------- incremental == batched

class Zoo(nn.Module):
    """Every kind of layer the incremental planner treats differently, on a 30x30 input."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU(inplace=True)
        self.same = nn.Conv2d(8, 8, 4, padding="same")  # even kernel: one more padding row after than before
        self.pool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)  # 30 -> 16, the last window past the border
        self.branch_a = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.branch_b = nn.Conv2d(8, 8, 1)
        self.bias_map = nn.Parameter(torch.randn(1, 8, 16, 16) * 0.1)  # a static map with spatial extent
        self.avg = nn.AvgPool2d(3, 2, padding=1)  # padding counted in the divisor: exact on a patch
        self.down = nn.Conv2d(8, 12, 1, stride=2)  # reads every other row only
        self.grouped = nn.Conv2d(12, 12, 3, padding=1, groups=3)
        self.adaptive = nn.AdaptiveMaxPool2d(2)  # 4 -> 2: a regular window
        self.avg_excl = nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)  # whole maps
        self.head = nn.Linear(12 * 2 * 2, classes)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        x = self.act(self.bn(self.stem(x)))
        x = F.relu(self.same(x), inplace=True)
        x = self.pool(x)
        out = self.branch_a(x)
        out += self.branch_b(x)  # residual union of two regions of different sizes
        out = out + self.bias_map
        out = out.relu_() * 0.5
        out = self.avg(out)
        out = torch.sigmoid(self.grouped(self.down(out))) - 0.5
        out = self.avg_excl(self.adaptive(out))
        return self.head(torch.flatten(out, 1))


def _models() -> dict[str, tuple[nn.Module, int]]:
    torch.manual_seed(0)
    tv = torchvision_models()
    return {
        "zoo": (Zoo().eval(), 30),
        "demo": (load_demo_model(), 64),
        "resnet18": (tv.resnet18(weights=None).eval(), 64),
        "vgg11": (tv.vgg11(weights=None).eval(), 64),
    }


@pytest.fixture(scope="module")
def models():
    return _models()


CASES = [  # model, window, stride, occluder, layer
    ("zoo", 5, 2, "zero", "avg"),
    ("zoo", 3, 1, "blur", "grouped"),
    ("demo", 9, 3, "blur", "auto"),
    ("demo", 20, 11, "mean", "features.4"),
    ("resnet18", 9, 5, "zero", "auto"),
    ("resnet18", 14, 6, "mean", "layer2"),
    ("vgg11", 9, 5, "zero", "auto"),
]


@pytest.mark.parametrize("name, window, stride, occluder, layer", CASES + [("resnet18", 11, 7, "zero", "layer1")])
def test_incremental_equals_batched_inference(models, name, window, stride, occluder, layer):
    model, size = models[name]
    width = size + 32 if layer == "layer1" else size  # a wide image
    x = torch.randn(1, 3, size, width, generator=torch.Generator().manual_seed(window))
    kwargs = dict(window=window, stride=stride, occluder=occluder, layer=layer)
    fast = occlusion.occlusion_maps(model, x, engine="incremental", full_share=1.1 if name == "zoo" else None,
                                    **kwargs)
    plain = occlusion.occlusion_maps(model, x, engine="batched", **kwargs)
    assert fast.engine == "incremental" and plain.engine == "batched"
    assert fast.channel == plain.channel and fast.target == plain.target
    assert np.abs(fast.probability - plain.probability).max() <= 1e-5
    scale = np.abs(plain.feature).max()
    assert np.abs(fast.feature - plain.feature).max() <= 1e-5 * scale
    assert np.array_equal(fast.top_class, plain.top_class)
    assert np.abs(fast.top_probability - plain.top_probability).max() <= 1e-5


def test_the_planner_computes_patches_and_switches_to_whole_maps(models):
    model, size = models["zoo"]
    x = torch.randn(1, 3, size, size)
    runner = IncrementalRunner(model, x, Windows(size, size, 5, 2), torch.zeros_like(x), full_share=1.1)
    kinds = runner.engine.plan.kinds
    patched = {name for name, kind in kinds.items() if isinstance(kind, Region)}
    assert {"stem", "bn", "same", "pool", "branch_a", "branch_b", "add", "add_1", "relu_", "mul", "avg", "down",
            "grouped", "sigmoid", "sub", "adaptive"} <= patched
    assert kinds["avg_excl"] == FULL and kinds["head"] == FULL  # not exact on a patch / not spatial
    assert kinds["bias_map"] == "static"
    assert kinds["add"].height == kinds["branch_a"].height > kinds["branch_b"].height  # the union
    resnet, size = models["resnet18"]
    runner = IncrementalRunner(resnet, torch.randn(1, 3, size, size), Windows(size, size, 9, 5),
                               torch.zeros(1, 3, size, size))
    kinds = runner.engine.plan.kinds
    assert isinstance(kinds["conv1"], Region) and kinds["fc"] == FULL and kinds["layer4_1_conv2"] == FULL


def test_a_large_window_is_whole_image_inference(demo, image):
    maps = occlusion.occlusion_maps(demo, image, window=60, stride=4)
    assert maps.engine == "batched" and "covers most of the image" in maps.note


# ---------------------------------------------------------------- graphs the engine cannot run

class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.conv(x)
        if x.mean() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x * 2
        return self.head(x.mean(dim=(2, 3)))


class Mutating(Branchy):
    def forward(self, x):
        x = self.conv(x)
        x.clamp_min_(0.1)  # an in-place method the engine does not know
        return self.head(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("model, reason", [(Branchy(), "torch.fx cannot trace Branchy"),
                                           (Mutating(), r"in-place method .clamp_min_\(\)")])
def test_untraceable_models_fall_back_to_batched_inference(model, reason):
    model.eval()
    x = torch.randn(1, 3, 16, 16)
    maps = occlusion.occlusion_maps(model, x, window=4, stride=2, layer="conv")
    assert maps.engine == "batched" and "incremental inference skipped" in maps.note
    assert re.search(reason, maps.note)
    with torch.no_grad():
        expected = torch.softmax(model(occluded_images(x, torch.zeros_like(x), maps.windows,
                                                       torch.arange(maps.windows.count))), 1)
    assert np.allclose(maps.probability.ravel(), expected[:, maps.target].numpy(), atol=1e-6)
    with pytest.raises(OcclusionError, match="incremental occlusion cannot run on"):
        occlusion.occlusion_maps(model, x, window=4, stride=2, engine="incremental")


def test_a_layer_run_twice_is_refused():
    model = DemoNet().eval()
    x = torch.randn(1, 3, 64, 64)
    relu = nn.ReLU()
    model.features[1] = relu
    model.features[4] = relu
    with pytest.raises(AttributionError, match="runs more than once"):
        occlusion.occlusion_maps(model, x, window=32, stride=32, layer="features.1")
