"""The mathematics of each method on tiny models with hand-checked answers, and the
properties every method shares: batch consistency, chunking, targets, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nnvis_core.demo import DemoNet
from nnvis_core.toolkit import AttributionError, gradient, reduce_channels
from nnvis_plugins.attribution import (
    deconvnet,
    gradcam,
    gradient_x_input,
    guided_backprop,
    guided_gradcam,
    integrated_gradients,
    smoothgrad,
)


@pytest.fixture(scope="module")
def demo64():
    torch.manual_seed(0)
    return DemoNet().double().eval()


def test_gradient_x_input_of_a_linear_model_is_weight_times_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x = torch.randn(2, 3, 2, 2)
    expected = model[1].weight[1].view(3, 2, 2) * x
    assert torch.allclose(gradient_x_input.attribute(model, x, 1), expected, atol=1e-6)


@pytest.mark.parametrize("method", integrated_gradients.METHODS)
def test_integration_points_integrate_polynomials(method):
    steps = 40
    alphas, weights = integrated_gradients.integration_points(steps, method)
    assert len(alphas) == len(weights) == steps
    assert sum(weights) == pytest.approx(1.0)
    exact = 1 / 3
    midpoint_like = method in ("riemann_middle", "riemann_trapezoid")
    tolerance = 1e-12 if method == "gausslegendre" else 1e-3 if midpoint_like else 0.03
    assert sum(w * a * a for a, w in zip(alphas, weights)) == pytest.approx(exact, abs=tolerance)


def test_integrated_gradients_of_a_quadratic_is_exact():
    class Square(nn.Module):
        def forward(self, x):
            return (x.flatten(1) ** 2 * torch.arange(1.0, 5.0, dtype=x.dtype)).sum(1, keepdim=True)

    x = torch.tensor([[1.0, -2.0, 0.5, 3.0]], dtype=torch.float64).view(1, 1, 2, 2)
    attributions = integrated_gradients.attribute(Square(), x, 0, steps=3)
    # along the path a*x the integrand is 2*w*a*x^2; its integral is w*x^2 (exact for Gauss-Legendre, 3 points)
    assert torch.allclose(attributions.flatten(), torch.arange(1.0, 5.0, dtype=torch.float64) * x.flatten() ** 2)


@pytest.mark.parametrize("baseline", ["black", "blur", "noise"])
def test_integrated_gradients_completeness_on_a_smooth_convnet(baseline):
    from nnvis_core.toolkit import pixel_baseline

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Softplus(), nn.Conv2d(8, 8, 3, stride=2), nn.Tanh(),
                          nn.Flatten(), nn.LazyLinear(4)).double()
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    model(x)
    black = torch.full((3, 16, 16), -1.7, dtype=torch.float64)
    base = pixel_baseline(baseline, x, black, torch.Generator().manual_seed(2), normalize=lambda u: (u - 0.5) / 0.29)
    assert base.shape == x.shape and not torch.equal(base, x)
    _, delta = integrated_gradients.attribute(model, x, 3, base, steps=32, return_delta=True)
    with torch.no_grad():
        change = (model(x) - model(base))[0, 3].abs()
    assert change > 1e-3
    assert abs(float(delta)) < 1e-8 * float(change)  # Gauss-Legendre on a smooth path: exact to rounding


def test_gradcam_on_a_gap_linear_head_is_the_class_activation_map():
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU())
    head = nn.Linear(5, 4)
    model = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()
    x = torch.randn(2, 3, 6, 6)
    cam = gradcam.attribute(model, x, 2, layer=features[1], upsampling=None)
    activation = features(x)
    # d score / d A_k(ij) = w_k / 36 everywhere, so Grad-CAM = ReLU(sum_k w_k A_k) / 36 (CAM, Zhou et al. 2016)
    expected = torch.relu((head.weight[2].view(1, 5, 1, 1) * activation).sum(1, keepdim=True)) / 36
    assert torch.allclose(cam, expected, atol=1e-6)
    assert gradcam.attribute(model, x, 2, layer=features[1]).shape == (2, 1, 6, 6)


def test_gradcam_rejects_a_layer_run_twice_per_pass():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(3, 3, 1), relu, nn.Conv2d(3, 3, 1), relu, nn.Flatten(), nn.Linear(12, 2))
    with pytest.raises(AttributionError, match="more than once"):
        gradcam.attribute(model, torch.randn(1, 3, 2, 2), 0, layer=relu)


def test_guided_gradcam_is_guided_backprop_times_the_upsampled_cam(demo64):
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    layer = demo64.features[-3]
    expected = guided_backprop.attribute(demo64, x, 1) * gradcam.attribute(demo64, x, 1, layer, "bilinear")
    assert torch.allclose(guided_gradcam.attribute(demo64, x, 1, layer), expected)


def test_feature_projection_keeps_only_the_strongest_activation():
    torch.manual_seed(0)
    conv1, conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1)
    model = nn.Sequential(conv1, nn.ReLU(), nn.MaxPool2d(2), conv2, nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 2))
    x = torch.randn(1, 3, 8, 8)
    projection = guided_backprop.project_feature(model, x, conv2)
    with torch.no_grad():
        activation = conv2(nn.MaxPool2d(2)(torch.relu(conv1(x))))
    strongest = activation.flatten(2).amax(2).argmax(1)
    assert int(projection.channel) == int(strongest)
    channel_map = activation[0, int(strongest)]
    row, col = projection.position[0].tolist()
    assert float(channel_map[row, col]) == pytest.approx(float(channel_map.max()))
    assert float(projection.activation) == pytest.approx(float(channel_map.max()))

    # the same as the rule's gradient of that single activation, scaled by its value
    def single(v):
        return (conv2(nn.MaxPool2d(2)(torch.relu(conv1(v))))[:, int(strongest), row, col] * channel_map.max()).sum()

    class Single(nn.Module):
        def forward(self, v):
            return single(v).view(1, 1)

    expected = guided_backprop.attribute(Single(), x, 0)
    assert torch.allclose(projection.attribution, expected, atol=1e-6)
    # an explicit channel
    chosen = deconvnet.project_feature(model, x, conv2, channel=2)
    assert int(chosen.channel) == 2 and chosen.attribution.shape == x.shape
    with pytest.raises(AttributionError, match="out of range"):
        deconvnet.project_feature(model, x, conv2, channel=6)


def test_smoothgrad_with_zero_noise_is_the_base_method(demo64):
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    zero = torch.zeros(1, 4, 3, 64, 64, dtype=torch.float64)
    assert torch.allclose(smoothgrad.attribute(demo64, x, 2, noise=zero), gradient(demo64, x, 2))
    assert torch.allclose(smoothgrad.attribute(demo64, x, 2, "guided_backprop", noise=zero),
                          guided_backprop.attribute(demo64, x, 2))
    assert torch.allclose(smoothgrad.attribute(demo64, x, 2, "gradient", noise=zero, variant="squared"),
                          gradient(demo64, x, 2) ** 2)
    assert smoothgrad.attribute(demo64, x, 2, noise=zero, variant="vargrad").abs().max() < 1e-12


def test_smoothgrad_is_seeded_and_independent_of_the_chunk_size(demo64):
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    first = smoothgrad.attribute(demo64, x, [0, 1], samples=6, generator=torch.Generator().manual_seed(7))
    again = smoothgrad.attribute(demo64, x, [0, 1], samples=6, generator=torch.Generator().manual_seed(7),
                                 batch_size=5)
    other = smoothgrad.attribute(demo64, x, [0, 1], samples=6, generator=torch.Generator().manual_seed(8))
    assert torch.allclose(first, again, rtol=1e-10, atol=1e-14)
    assert not torch.allclose(first, other)


METHODS = {
    "gradient": lambda m, x, t: gradient(m, x, t),
    "deconvnet": deconvnet.attribute,
    "guided_backprop": guided_backprop.attribute,
    "gradient_x_input": gradient_x_input.attribute,
    "integrated_gradients": lambda m, x, t: integrated_gradients.attribute(m, x, t, steps=5),
    "integrated_gradients_chunked": lambda m, x, t: integrated_gradients.attribute(m, x, t, steps=5, batch_size=3),
    "smoothgrad": lambda m, x, t: smoothgrad.attribute(m, x, t, samples=3, generator=torch.Generator().manual_seed(0)),
    "gradcam": lambda m, x, t: gradcam.attribute(m, x, t),
    "guided_gradcam": lambda m, x, t: guided_gradcam.attribute(m, x, t),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_batch_consistency_targets_and_an_untouched_model(demo64, name):
    from nnvis_core.toolkit import model_state

    method = METHODS[name]
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    before = model_state(demo64)
    both = method(demo64, x, [1, 4])
    assert both.shape[0] == 2 and both.shape[-2:] == (64, 64) and torch.isfinite(both).all()
    assert both.abs().sum() > 0
    if name != "smoothgrad":  # noise differs with the batch; the rest must not
        assert torch.allclose(both[:1], method(demo64, x[:1], 1), rtol=1e-9, atol=1e-12)
        assert torch.allclose(both[1:], method(demo64, x[1:], 4), rtol=1e-9, atol=1e-12)
        by_callable = method(demo64, x, lambda out: out[:, 1] - out[:, 4])
        assert by_callable.shape == both.shape
    assert model_state(demo64) == before
    assert all(p.grad is None for p in demo64.parameters())


def test_targets_are_checked():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(AttributionError, match="3 targets for 2 inputs"):
        gradient(model, torch.randn(2, 3, 2, 2), [0, 1, 2])


def test_reduce_channels():
    a = torch.tensor([[[1.0]], [[-3.0]], [[2.0]]])
    assert [float(reduce_channels(a, how)) for how in ("sum", "abs_sum", "abs_max")] == [0.0, 6.0, 3.0]
    assert float(reduce_channels(a, "l2")) == pytest.approx(np.sqrt(14))


def test_gradcam_default_layer_is_the_rectified_last_conv_and_not_degenerate():
    """At the raw last conv of the trained demo net most Grad-CAM maps are all zero; at its ReLU none is."""
    from nnvis_core.demo.model import WEIGHTS_PATH

    if not WEIGHTS_PATH.is_file():
        pytest.skip("trained demo weights not built yet")
    from nnvis_core.demo import load_demo_model
    from nnvis_core.demo.model import normalize
    from nnvis_core.demo.shapes import generate_dataset

    model = load_demo_model()
    assert gradcam.default_layer(model) == "features.16"
    images, _, _ = generate_dataset(16, seed=5)
    x = normalize(images)
    with torch.no_grad():
        targets = model(x).argmax(1)

    def all_zero_share(layer: str) -> float:
        cams = gradcam.attribute(model, x, targets, layer, upsampling=None)
        return float((cams.flatten(1).amax(1) == 0).float().mean())

    assert all_zero_share("auto") == 0.0
    assert all_zero_share("last_conv") > 0.3


def test_a_refused_grad_cam_layer_names_one_that_grad_cam_reads():
    """A layer after the global pooling is refused, and the refusal names a layer that was checked: Grad-CAM
    run there gives a map of positions, not a constant."""
    import re

    from nnvis_core.models.layers import remember_input_size

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    remember_input_size(model, (16, 16))
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(AttributionError) as refused:
        gradcam.attribute(model, x, 0, layer="4", strict=True)
    suggested = re.search(r"name a layer \(see nnvis layers\): (\S+) is the last one", str(refused.value)).group(1)
    assert suggested == "2"  # the last conv: the last block that holds weights
    cam = gradcam.attribute(model, x, 0, layer=suggested, upsampling=None, strict=True)
    assert cam.shape[-2:] == (16, 16) and float(cam.max() - cam.min()) > 0
