"""Every attribution method equals its Captum 0.9.0 counterpart to 1e-5 relative error,
on the demo net and on randomly initialised torchvision resnet18, vgg11 and alexnet.

resnet18 reuses one in-place ReLU module per block; vgg11 and alexnet use in-place
ReLUs after every conv, so these also check the rule machinery on real models.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from nnvis_core.demo import DemoNet
from nnvis_core.models.layers import find_layer, last_conv_layer
from nnvis_core.toolkit import gradient
from nnvis_core.torchvision_compat import torchvision_models
from nnvis_plugins.attribution import (
    deconvnet,
    gradcam,
    gradient_x_input,
    guided_backprop,
    guided_gradcam,
    integrated_gradients,
    smoothgrad,
)

captum_attr = pytest.importorskip("captum.attr")
from captum.attr._core.noise_tunnel import NoiseTunnel  # noqa: E402

SIZE = 64
MODELS = ("demo", "resnet18", "vgg11", "alexnet")


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    tv = torchvision_models()
    return {
        "demo": DemoNet().eval(),
        "resnet18": tv.resnet18(weights=None).eval(),
        "vgg11": tv.vgg11(weights=None).eval(),
        "alexnet": tv.alexnet(weights=None).eval(),
    }


@pytest.fixture(scope="module")
def inputs():
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


TARGETS = [1, 3]


def assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    ours, theirs = ours.detach(), theirs.detach()
    scale = theirs.abs().max()
    assert scale > 0, "degenerate comparison: Captum's map is all zero"
    error = float((ours - theirs).abs().max() / scale)
    assert error <= 1e-5, f"relative error {error:.2e}"


def captum(cls, *args, **kwargs):
    with warnings.catch_warnings():  # Captum warns about requires_grad and hooks on every call
        warnings.simplefilter("ignore")
        return cls(*args).attribute(**kwargs)


def last_conv(model):
    return find_layer(model, last_conv_layer(model))


@pytest.mark.parametrize("name", MODELS)
def test_gradient_equals_saliency(models, inputs, name):
    model = models[name]
    assert_close(gradient(model, inputs, TARGETS),
                 captum(captum_attr.Saliency, model, inputs=inputs, target=TARGETS, abs=False))


@pytest.mark.parametrize("name", MODELS)
def test_deconvnet_equals_deconvolution(models, inputs, name):
    model = models[name]
    assert_close(deconvnet.attribute(model, inputs, TARGETS),
                 captum(captum_attr.Deconvolution, model, inputs=inputs, target=TARGETS))


@pytest.mark.parametrize("name", MODELS)
def test_guided_backprop_equals_guided_backprop(models, inputs, name):
    model = models[name]
    ours = guided_backprop.attribute(model, inputs, TARGETS)
    assert_close(ours, captum(captum_attr.GuidedBackprop, model, inputs=inputs, target=TARGETS))
    assert not torch.allclose(ours, deconvnet.attribute(model, inputs, TARGETS))


@pytest.mark.parametrize("name", MODELS)
def test_input_x_gradient_equals_input_x_gradient(models, inputs, name):
    model = models[name]
    assert_close(gradient_x_input.attribute(model, inputs, TARGETS),
                 captum(captum_attr.InputXGradient, model, inputs=inputs, target=TARGETS))


@pytest.mark.parametrize("name, method", [(name, "gausslegendre") for name in MODELS] + [
    ("demo", "riemann_middle"), ("demo", "riemann_left"), ("demo", "riemann_right")])
def test_integrated_gradients_equals_integrated_gradients(models, inputs, name, method):
    model = models[name]
    baselines = torch.randn(inputs.shape, generator=torch.Generator().manual_seed(4)) * 0.1
    # Same batch composition as Captum: ReLU nets' gradients jump where a unit sits at 0, so a
    # different chunking (different float rounding) may flip a unit; batching is checked in float64.
    ours, delta = integrated_gradients.attribute(model, inputs, TARGETS, baselines, steps=6, method=method,
                                                 return_delta=True)
    theirs, their_delta = captum(captum_attr.IntegratedGradients, model, inputs=inputs, target=TARGETS,
                                 baselines=baselines, n_steps=6, method=method, return_convergence_delta=True)
    assert_close(ours, theirs)
    assert torch.allclose(delta, their_delta, rtol=1e-4, atol=1e-5 * theirs.abs().sum())


@pytest.mark.parametrize("name", MODELS)
def test_gradcam_equals_layer_gradcam(models, inputs, name):
    model = models[name]
    layer = last_conv(model)
    assert_close(gradcam.attribute(model, inputs, TARGETS, layer, upsampling=None),
                 captum(captum_attr.LayerGradCam, model, layer, inputs=inputs, target=TARGETS,
                        relu_attributions=True))


@pytest.mark.parametrize("name, upsampling", [(name, "bilinear") for name in MODELS] + [("demo", "nearest")])
def test_guided_gradcam_equals_guided_gradcam(models, inputs, name, upsampling):
    model = models[name]
    layer = last_conv(model)
    assert_close(guided_gradcam.attribute(model, inputs, TARGETS, layer, upsampling),
                 captum(captum_attr.GuidedGradCam, model, layer, inputs=inputs, target=TARGETS,
                        interpolate_mode=upsampling))


@pytest.fixture
def shared_noise(monkeypatch):
    """Make Captum's NoiseTunnel add the noise we give it instead of drawing its own."""
    holder = {}

    def add_noise(input, stdev, nt_samples_partition):
        noise = holder["noise"]
        assert noise.shape[1] == nt_samples_partition
        return input.repeat_interleave(nt_samples_partition, dim=0) + noise.reshape(-1, *input.shape[1:])

    monkeypatch.setattr(NoiseTunnel, "_add_noise_to_input", staticmethod(add_noise))
    return holder


SMOOTHGRAD_BASES = {
    "gradient": (captum_attr.Saliency, {"abs": False}),
    "guided_backprop": (captum_attr.GuidedBackprop, {}),
    "integrated_gradients": (captum_attr.IntegratedGradients, {"n_steps": 3}),
}


VARIANTS = {"mean": "smoothgrad", "squared": "smoothgrad_sq", "vargrad": "vargrad"}
SMOOTHGRAD_CASES = [("demo", base, variant) for base in SMOOTHGRAD_BASES for variant in VARIANTS] + [
    ("resnet18", base, "mean") for base in SMOOTHGRAD_BASES] + [("vgg11", "guided_backprop", "squared")]


@pytest.mark.parametrize("name, base, variant", SMOOTHGRAD_CASES)
def test_smoothgrad_equals_noise_tunnel_with_the_same_noise(models, inputs, shared_noise, name, base, variant):
    model = models[name]
    samples = 3
    noise = smoothgrad.draw_noise(inputs, samples, 0.15, torch.Generator().manual_seed(5))
    shared_noise["noise"] = noise
    ours = smoothgrad.attribute(model, inputs, TARGETS, base, noise=noise, variant=variant, steps=3)
    cls, kwargs = SMOOTHGRAD_BASES[base]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = NoiseTunnel(cls(model)).attribute(inputs, nt_type=VARIANTS[variant], nt_samples=samples, stdevs=0.1,
                                                   target=TARGETS, **kwargs)
    assert_close(ours, theirs)


def test_drawn_noise_has_the_documented_scale(inputs):
    noise = smoothgrad.draw_noise(inputs, 400, 0.15, torch.Generator().manual_seed(0))
    value_range = inputs.flatten(1).amax(1) - inputs.flatten(1).amin(1)
    measured = noise.flatten(1).std(1)
    assert torch.allclose(measured, 0.15 * value_range, rtol=0.02)


@pytest.mark.parametrize("name", MODELS)
def test_gradcam_at_the_plugin_default_layer_equals_layer_gradcam(models, inputs, name):
    """The rectified output of the last conv: an in-place ReLU (vgg11, alexnet), a ReLU module (demo) or a
    ResNet block whose one ReLU module runs twice (resnet18)."""
    model = models[name]
    expected = {"demo": "features.16", "resnet18": "layer4", "vgg11": "features.19", "alexnet": "features.11"}
    assert gradcam.default_layer(model) == expected[name]
    layer = find_layer(model, expected[name])
    assert_close(gradcam.attribute(model, inputs, TARGETS, layer, upsampling=None),
                 captum(captum_attr.LayerGradCam, model, layer, inputs=inputs, target=TARGETS,
                        relu_attributions=True))
