"""The feature-visualization library against its definitions: objectives, parameterizations,
colour decorrelation, transforms, the optimization loop's care for the model, the disk cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nnvis_core.toolkit import model_state, preactivation, rectified_output
from nnvis_core.toolkit.featvis import colour
from nnvis_core.toolkit.featvis import objectives as o
from nnvis_core.toolkit.featvis import transforms as t
from nnvis_core.toolkit.featvis.parameterizations import fourier_image, gaussian_blur, pixel_image
from nnvis_core.toolkit.featvis.render import Recorder, Settings, optimize, render
from nnvis_core.toolkit.featvis.spectrum import high_frequency_share
from nnvis_plugins.featvis.cache import VisualizationCache, cached_units, default_cache_dir, model_fingerprint
from nnvis_plugins.featvis.layers import sample_layers, spread


def activations(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"conv": torch.randn(3, 5, 4, 6, generator=g), o.LOGITS: torch.randn(3, 7, generator=g),
            o.IMAGE: torch.rand(3, 3, 8, 8, generator=g)}


# --- objectives ---------------------------------------------------------------------------------

def test_unit_objectives_match_their_definitions():
    a = activations()
    conv, logits = a["conv"], a[o.LOGITS]
    torch.testing.assert_close(o.channel("conv", 2)(a), conv[:, 2].mean(dim=(1, 2)))
    torch.testing.assert_close(o.channel("conv", [0, 4, 1])(a), torch.stack([conv[0, 0].mean(), conv[1, 4].mean(),
                                                                              conv[2, 1].mean()]))
    torch.testing.assert_close(o.neuron("conv", [1, 2, 3])(a), torch.stack([conv[0, 1, 2, 3], conv[1, 2, 2, 3],
                                                                             conv[2, 3, 2, 3]]))
    torch.testing.assert_close(o.neuron("conv", 4, x=5, y=1)(a), conv[:, 4, 1, 5])
    torch.testing.assert_close(o.layer_activation("conv")(a), (conv ** 2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(o.class_logit([6, 0, 3])(a), logits[[0, 1, 2], [6, 0, 3]])
    torch.testing.assert_close(o.class_probability(5)(a), torch.softmax(logits, 1)[:, 5])


def test_a_direction_scores_the_dot_product_weighed_by_the_cosine_at_every_position():
    a = activations()
    conv = a["conv"]  # (3, 5, 4, 6)
    v = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
    vectors = conv.permute(0, 2, 3, 1)  # (N, h, w, C)
    dot = vectors @ (v / v.norm())
    cosine = dot / vectors.norm(dim=-1)
    expected = (dot * cosine.clamp_min(0.01)).mean(dim=(1, 2))
    torch.testing.assert_close(o.direction("conv", v)(a), expected)
    squared = (dot * cosine.clamp_min(0.01) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(o.direction("conv", v, cosine_power=2)(a), squared)
    per_image = torch.stack([v, -v, torch.ones(5)])  # one direction per image
    torch.testing.assert_close(o.direction("conv", per_image)(a)[1:2], o.direction("conv", -v)(a)[1:2])
    with pytest.raises(o.ObjectiveError, match="5 channels"):
        o.direction("conv", torch.ones(4))(a)


def test_objectives_combine_like_numbers():
    a = activations()
    one, two = o.channel("conv", 1), o.class_logit(2)
    torch.testing.assert_close((one + two)(a), one(a) + two(a))
    torch.testing.assert_close((2.5 * one - two / 2)(a), 2.5 * one(a) - two(a) / 2)
    torch.testing.assert_close((-one + 1)(a), 1 - one(a))
    torch.testing.assert_close((3 - one)(a), 3 - one(a))
    assert (one + two - 0.1 * o.total_variation()).layers == {"conv", o.LOGITS, o.IMAGE}


def test_image_penalties_match_their_definitions():
    a = activations()
    image = a[o.IMAGE]
    tv = ((image[..., 1:] - image[..., :-1]).abs().mean(dim=(1, 2, 3))
          + (image[..., 1:, :] - image[..., :-1, :]).abs().mean(dim=(1, 2, 3)))
    torch.testing.assert_close(o.total_variation()(a), tv)
    torch.testing.assert_close(o.l1(0.5)(a), (image - 0.5).abs().mean(dim=(1, 2, 3)))
    torch.testing.assert_close(o.l2(0.2)(a), ((image - 0.2) ** 2).mean(dim=(1, 2, 3)))
    flat = {o.IMAGE: torch.full((2, 3, 5, 5), 0.5)}
    assert o.total_variation()(flat).tolist() == [0.0, 0.0] and o.l1()(flat).tolist() == [0.0, 0.0]


def test_diversity_is_minus_the_mean_gram_cosine_to_the_others_in_the_group():
    g = torch.Generator().manual_seed(1)
    out = torch.randn(4, 3, 5, 5, generator=g)
    grams = [(x.flatten(1) @ x.flatten(1).T / 25).flatten() for x in out]
    cos = lambda u, v: float(u @ v / (u.norm() * v.norm()))  # noqa: E731
    expected_all = [-sum(cos(grams[i], grams[j]) for j in range(4) if j != i) / 3 for i in range(4)]
    expected_pairs = [-cos(grams[0], grams[1]), -cos(grams[1], grams[0]), -cos(grams[2], grams[3]),
                      -cos(grams[3], grams[2])]
    assert o.diversity("x")({"x": out}).tolist() == pytest.approx(expected_all, rel=1e-5)
    assert o.diversity("x", group_size=2)({"x": out}).tolist() == pytest.approx(expected_pairs, rel=1e-5)
    same = out[:1].repeat(3, 1, 1, 1)
    assert o.diversity("x")({"x": same}).tolist() == pytest.approx([-1.0] * 3, rel=1e-5)


def test_bad_units_are_clear_errors():
    a = activations()
    with pytest.raises(o.ObjectiveError, match="5 channels; asked for"):
        o.channel("conv", 9)(a)
    with pytest.raises(o.ObjectiveError, match="2 units given for a batch of 3"):
        o.channel("conv", [0, 1])(a)
    with pytest.raises(o.ObjectiveError, match="no activation captured for layer 'other'"):
        o.channel("other", 0)(a)
    with pytest.raises(o.ObjectiveError, match="outside layer"):
        o.neuron("conv", 0, x=6, y=0)(a)


# --- parameterizations, colour, transforms ------------------------------------------------------

@pytest.mark.parametrize("make", [pixel_image, fourier_image])
def test_parameterizations_give_images_in_range_and_gradients(make):
    image = make(2, (12, 16), generator=torch.Generator().manual_seed(0))
    picture = image.image()
    assert picture.shape == (2, 3, 12, 16) and picture.min() >= 0 and picture.max() <= 1
    assert (picture - 0.5).abs().max() < 0.1  # a faint start
    picture.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in image.params)


def test_fourier_blur_equals_a_gaussian_blur_of_the_underlying_image():
    image = fourier_image(1, 32, decorrelate=False, sd=1.0, generator=torch.Generator().manual_seed(0))
    logit = lambda: torch.logit(image.image().detach().double())  # noqa: E731 - the pre-sigmoid image
    before = logit()
    image.blur(1.5)
    after = logit()
    # A circular Gaussian blur, the spatial twin of multiplying the spectrum by exp(-2 pi^2 s^2 f^2).
    taps = torch.exp(-torch.arange(-16, 16, dtype=torch.float64) ** 2 / (2 * 1.5 ** 2))
    kernel = torch.roll(taps / taps.sum(), 16)
    spatial = torch.fft.ifft2(torch.fft.fft2(before) * torch.fft.fft2(kernel[:, None] * kernel[None, :])).real
    torch.testing.assert_close(after, spatial, atol=2e-4, rtol=1e-3)


def test_pixel_blur_smooths_and_keeps_the_mean():
    image = pixel_image(1, 24, decorrelate=False, sd=1.0, generator=torch.Generator().manual_seed(0))
    values = image.params[0].detach().clone()
    image.blur(1.0)
    blurred = image.params[0].detach()
    assert blurred.std() < 0.6 * values.std()
    assert abs(float(blurred.mean() - values.mean())) < 0.05
    assert torch.allclose(gaussian_blur(values, 0.0), values)


def test_colour_basis_whitens_the_colours_it_was_computed_from():
    rng = np.random.default_rng(0)
    mixing = np.array([[0.3, 0.1, 0.0], [0.25, -0.05, 0.05], [0.2, -0.1, -0.04]])
    pixels = rng.normal(size=(20000, 3)) @ mixing.T
    basis = colour.basis_from_images(pixels)
    components = pixels @ np.linalg.inv(basis).T
    covariance = np.cov(components, rowvar=False)
    np.testing.assert_allclose(covariance / covariance[0, 0], np.eye(3), atol=0.05)
    assert np.linalg.norm(basis, axis=0).max() == pytest.approx(1.0)


def test_default_basis_has_a_luminance_axis_first():
    basis = colour.default_basis()
    luminance = basis[:, 0] / np.linalg.norm(basis[:, 0])
    assert abs(luminance @ np.ones(3) / math.sqrt(3)) == pytest.approx(1.0)
    norms = np.linalg.norm(basis, axis=0)
    assert norms[0] == pytest.approx(1.0) and norms[1] < 0.3 and norms[2] < 0.3


def test_rotation_by_a_right_angle_is_exact_and_unit_scale_is_identity():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    g = torch.Generator().manual_seed(0)
    rotated = t.random_rotate([90.0])(x, g)
    assert torch.allclose(rotated, torch.rot90(x, 1, dims=(2, 3)), atol=1e-4) or \
        torch.allclose(rotated, torch.rot90(x, -1, dims=(2, 3)), atol=1e-4)
    torch.testing.assert_close(t.random_scale([1.0])(x, g), x)
    torch.testing.assert_close(t.random_rotate([0.0])(x, g), x)


def test_transforms_shapes_determinism_and_gradient():
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    assert t.pad(4)(x, torch.Generator()).shape == (2, 3, 40, 40)
    assert t.jitter(5)(x, torch.Generator()).shape == (2, 3, 27, 27)
    standard = t.standard_transforms(32)
    first = standard(x, torch.Generator().manual_seed(3))
    again = standard(x, torch.Generator().manual_seed(3))
    other = standard(x, torch.Generator().manual_seed(4))
    assert first.shape == (2, 3, 32, 32)
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, other)
    first.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0



GRID = torch.rand(2, 20, 24, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("resample", [
    lambda x: torch.nn.functional.grid_sample(x, GRID, align_corners=False, padding_mode="reflection"),
    lambda x: torch.nn.functional.interpolate(x, size=(37, 29), mode="bilinear", align_corners=False),
    lambda x: torch.nn.functional.pad(x, (3, 3, 3, 3), mode="reflect"),
], ids=["grid_sample", "interpolate", "reflect_pad"])
def test_the_repeatable_resampling_has_the_plain_ops_values_and_gradient(resample):
    """On a GPU the transforms send resampling's backward to the CPU (fixed-order adds): the
    detour must change nothing but the order. Forced here on the CPU, where it can be compared."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    weights = torch.rand_like(resample(x))
    plain_out = resample(x)
    (plain_grad,) = torch.autograd.grad((plain_out * weights).sum(), x)
    detour_out = t.repeatable(resample, x, always=True)
    (detour_grad,) = torch.autograd.grad((detour_out * weights).sum(), x)
    torch.testing.assert_close(detour_out, plain_out, rtol=0, atol=0)
    torch.testing.assert_close(detour_grad, plain_grad, rtol=0, atol=0)
    assert plain_grad.abs().sum() > 0

def test_high_frequency_share_of_known_images():
    assert high_frequency_share(np.full((16, 16, 3), 7.0)) == 0.0
    checkerboard = (np.indices((16, 16)).sum(axis=0) % 2).astype(float)
    assert high_frequency_share(checkerboard) == pytest.approx(1.0)
    ramp = np.outer(np.sin(np.linspace(0, np.pi, 32)), np.ones(32))
    assert high_frequency_share(ramp) < 0.01


# --- the loop and the model ---------------------------------------------------------------------

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.features(x))


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.conv(self.conv(x)).mean(dim=(2, 3))


def test_optimization_raises_the_objective_and_leaves_the_model_as_found():
    model = Tiny().train()
    model.head.weight.requires_grad_(False)
    model.features[0].weight.grad = torch.ones_like(model.features[0].weight)
    before = model_state(model)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    result = render(model, o.channel("features.2", [1, 4]), 2, Settings(size=16, steps=30, lr=0.1))
    assert result.images.shape == (2, 16, 16, 3) and result.images.min() >= 0 and result.images.max() <= 1
    assert result.history[-1] > result.history[0]
    assert model_state(model) == before and model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert torch.equal(model.features[0].weight.grad, torch.ones_like(model.features[0].weight))


def test_hooks_are_removed_when_the_objective_fails():
    model = Tiny().eval()
    before = model_state(model)
    with pytest.raises(o.ObjectiveError):
        render(model, o.channel("features.2", 99), 1, Settings(size=8, steps=2))
    assert model_state(model) == before


def test_stopping_at_the_objectives_layer_changes_nothing_but_the_work():
    model = Tiny().eval()
    settings = Settings(size=16, steps=10)
    early = render(model, o.channel("features.0", [0, 3]), 2, settings, stop_early=True)
    full = render(model, o.channel("features.0", [0, 3]), 2, settings, stop_early=False)
    np.testing.assert_allclose(early.images, full.images, atol=1e-6)
    calls = []
    handle = model.head.register_forward_hook(lambda *args: calls.append(1))
    try:
        render(model, o.channel("features.0", 0), 1, Settings(size=8, steps=5))
    finally:
        handle.remove()
    assert len(calls) == 2  # the check pass and the final measurement, not the 5 steps


def test_same_seed_same_images_and_plain_settings():
    model = Tiny().eval()
    one = render(model, o.class_logit(1), 1, Settings(size=12, steps=5, seed=7))
    two = render(model, o.class_logit(1), 1, Settings(size=12, steps=5, seed=7))
    np.testing.assert_array_equal(one.images, two.images)
    plain = Settings.plain(size=12)
    assert (plain.parameterization, plain.decorrelate, plain.transforms) == ("pixel", False, False)
    with pytest.raises(ValueError, match="parameterization must be one of fourier, pixel"):
        Settings(parameterization="wavelet")


def test_layers_that_cannot_be_captured_are_named():
    with pytest.raises(o.ObjectiveError, match="runs more than once"):
        render(Twice(), o.channel("conv", 0), 1, Settings(size=8, steps=1))
    with pytest.raises(KeyError, match="no layer named 'featurez.2'"):
        Recorder(Tiny(), ["featurez.2"])


def test_optimize_takes_the_pieces_directly():
    model = Tiny().eval()
    image = pixel_image(1, 16, decorrelate=False, generator=torch.Generator().manual_seed(0))
    goal = o.class_logit(2) - 0.01 * o.l2()
    result = optimize(model, goal, image, transform=t.compose(t.pad(2), t.jitter(2)), steps=20, lr=0.1,
                      blur_every=5, blur_sigma=0.5)
    assert result.scores.shape == (1,) and result.logits.shape == (1, 3)
    assert result.history[-1] > result.history[0]


def test_layer_helpers_on_the_tiny_model():
    model = Tiny()
    assert preactivation(model, "features.1") == "features.0"
    assert preactivation(model, "features.2") == "features.2"
    assert rectified_output(model, "features.2") == "features.3"
    assert sample_layers(model, 3) == ["features.2"]
    assert spread(3, 10) == [0, 4, 9] and spread(5, 3) == [0, 1, 2]


# --- the cache ----------------------------------------------------------------------------------

def test_fingerprint_follows_the_weights():
    model = Tiny()
    first = model_fingerprint(model)
    assert model_fingerprint(Tiny()) == first
    with torch.no_grad():
        model.head.bias.add_(1.0)
    assert model_fingerprint(model) != first


def test_cache_round_trip_misses_and_reuse(tmp_path, monkeypatch):
    monkeypatch.setenv("NNVIS_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    cache = VisualizationCache(default_cache_dir(), "abc")
    picture = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    recipe = {"objective": "channel", "settings": Settings(size=4).as_dict()}
    assert cache.load("layer", 3, recipe) is None
    cache.save("layer", 3, recipe, picture)
    np.testing.assert_array_equal(cache.load("layer", 3, recipe), picture)
    assert cache.load("layer", 3, {**recipe, "objective": "neuron"}) is None
    assert cache.load("layer", 4, recipe) is None
    assert not list(cache.folder.glob("*.tmp"))
    cache.path("layer", 5, recipe).write_bytes(b"not an array")
    assert cache.load("layer", 5, recipe) is None

    made = []

    def make(units):
        made.append(list(units))
        return np.stack([np.full((4, 4, 3), u / 10) for u in units])

    first = cached_units(cache, "layer", [3, 5, 6, 5], recipe, make, batch=1)
    assert made == [[5], [6]] and list(first) == [3, 5, 6]
    np.testing.assert_array_equal(first[6], np.full((4, 4, 3), 153, dtype=np.uint8))
    again = cached_units(cache, "layer", [6, 5], recipe, make, batch=4)
    assert made == [[5], [6]]
    np.testing.assert_array_equal(again[6], first[6])
