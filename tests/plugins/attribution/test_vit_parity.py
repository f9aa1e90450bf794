"""Gradient methods on vision transformers equal their Captum 0.9.0 counterparts to 1e-5 relative error,
on randomly initialised torchvision vit_b_16 and swin_t (one 224 x 224 image).

Grad-CAM reads a token layer (vit_b_16) or a channels-last stage (swin_t) as (N, C, h, w) maps.
Captum's LayerGradCam averages the gradient over every dimension after the first two, which on a
(N, tokens, C) or (N, h, w, C) output is the wrong axis; so Captum is given a layer whose output is
the map itself: a hook on the real layer sends its output through a stand-alone nn.Identity as a
(N, C, h, w) map (class token dropped, tokens on their grid, channels first) and back, which changes
no value, and Captum attributes to that Identity.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from nnvis_core.models.layers import find_layer
from nnvis_core.toolkit import gradient
from nnvis_core.torchvision_compat import torchvision_models
from nnvis_plugins.attribution import gradcam, integrated_gradients, saliency

captum_attr = pytest.importorskip("captum.attr")

TARGET = 3
DEFAULT_LAYERS = {"vit_b_16": "encoder.layers.encoder_layer_11.ln_1", "swin_t": "features.7"}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    tv = torchvision_models()
    built = {}
    for name in ("vit_b_16", "swin_t"):
        torch.manual_seed(0)
        model = getattr(tv, name)(weights=None).eval()
        head = model.heads.head if name == "vit_b_16" else model.head
        if not head.weight.any():  # torchvision starts ViT's head at zero: every gradient would be zero
            nn.init.normal_(head.weight, std=0.02)
        built[name] = model
    return built


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))


def compare(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Max-abs difference over Captum's max-abs value (1e-5 at most), with shapes equal and Captum's map not zero."""
    assert ours.shape == theirs.shape
    ours, theirs = ours.detach(), theirs.detach()
    scale = theirs.abs().max()
    assert scale > 0, "degenerate comparison: Captum's map is all zero"
    error = float((ours - theirs).abs().max() / scale)
    assert error <= 1e-5, f"relative error {error:.2e} (max-abs diff {float((ours - theirs).abs().max()):.2e})"
    return error


def captum(cls, *args, **kwargs):
    with warnings.catch_warnings():  # Captum warns about requires_grad and hooks on every call
        warnings.simplefilter("ignore")
        return cls(*args).attribute(**kwargs)


@contextmanager
def as_map(layer: nn.Module, kind: str, grid: tuple[int, int]) -> Iterator[nn.Module]:
    """Yield an nn.Identity that sees `layer`'s output as a (N, C, h, w) map on every forward pass.

    kind "tokens": (N, 1 + h*w, C) with a class token first; "channels_last": (N, h, w, C).
    The layer's output goes through the Identity and back unchanged, so the model computes the
    same values and Captum's gradient at the Identity is the gradient at the layer's patches.
    """
    view = nn.Identity()
    h, w = grid

    def hook(module, args, output):
        if kind == "channels_last":
            return view(output.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        prefix, patches = output[:, :1], output[:, 1:]
        channels = output.shape[-1]
        grid_map = view(patches.reshape(output.shape[0], h, w, channels).permute(0, 3, 1, 2))
        return torch.cat([prefix, grid_map.permute(0, 2, 3, 1).reshape(output.shape[0], h * w, channels)], dim=1)

    handle = layer.register_forward_hook(hook)
    try:
        yield view
    finally:
        handle.remove()


@pytest.mark.slow
@pytest.mark.parametrize("name, kind", [("vit_b_16", "tokens"), ("swin_t", "channels_last")])
def test_gradcam_at_the_default_layer_equals_layer_gradcam_on_the_map(models, image, name, kind):
    model = models[name]
    assert gradcam.default_layer(model) == DEFAULT_LAYERS[name]
    layer = find_layer(model, DEFAULT_LAYERS[name])
    raw = gradcam.attribute(model, image, TARGET, DEFAULT_LAYERS[name], upsampling=None)
    grid = (14, 14) if kind == "tokens" else (7, 7)
    assert raw.shape == (1, 1, *grid)
    with as_map(layer, kind, grid) as view:
        theirs = captum(captum_attr.LayerGradCam, model, view, inputs=image, target=TARGET, relu_attributions=True)
    compare(raw, theirs)
    # The plugin's upsampling is Captum's LayerAttribution.interpolate (F.interpolate, align_corners=False).
    upsampled = gradcam.attribute(model, image, TARGET, DEFAULT_LAYERS[name], upsampling="bilinear")
    compare(upsampled, captum_attr.LayerAttribution.interpolate(theirs, (224, 224), "bilinear"))
    compare(gradcam.upsample(raw, (224, 224), "nearest"),
            captum_attr.LayerAttribution.interpolate(theirs, (224, 224), "nearest"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_b_16", "swin_t"])
def test_gradient_and_saliency_equal_saliency(models, image, name):
    model = models[name]
    theirs = captum(captum_attr.Saliency, model, inputs=image, target=TARGET, abs=False)
    compare(gradient(model, image, TARGET), theirs)
    # The saliency plugin's map (its input_gradient, absolute, maximised over colour channels).
    compare(saliency.saliency_map(model, image, TARGET), theirs.abs().amax(dim=1))


@pytest.mark.slow
@pytest.mark.parametrize("name, steps", [("vit_b_16", 4), ("swin_t", 8)])  # about 15 s each on 2 CPU cores
def test_integrated_gradients_equals_integrated_gradients(models, image, name, steps):
    model = models[name]
    baselines = torch.randn(image.shape, generator=torch.Generator().manual_seed(4)) * 0.1
    # One pass of all steps on both sides (Captum's default internal_batch_size), the plugin's default rule.
    ours, delta = integrated_gradients.attribute(model, image, TARGET, baselines, steps=steps, method="gausslegendre",
                                                 return_delta=True)
    theirs, their_delta = captum(captum_attr.IntegratedGradients, model, inputs=image, target=TARGET,
                                 baselines=baselines, n_steps=steps, method="gausslegendre",
                                 return_convergence_delta=True)
    compare(ours, theirs)
    assert torch.allclose(delta, their_delta, rtol=1e-4, atol=1e-5 * theirs.abs().sum())
