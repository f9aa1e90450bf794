"""Gradient saliency equals its definition and Captum's Saliency."""

from __future__ import annotations

import pytest
import torch

from nnvis_core.demo import DemoNet
from nnvis_core.torchvision_compat import torchvision_models
from nnvis_plugins.attribution.saliency import saliency_map


def test_matches_the_definition_on_a_linear_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 5, 6))
    x = torch.randn(2, 3, 4, 5)
    target = 4
    expected = model[1].weight[target].reshape(3, 4, 5).abs().amax(0)
    result = saliency_map(model, x, target)
    assert result.shape == (2, 4, 5)
    assert torch.allclose(result[0], expected) and torch.allclose(result[1], expected)


def test_matches_central_differences_on_the_demo_net():
    torch.manual_seed(1)
    model = DemoNet().double().eval()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    target = 2
    gradient_map = saliency_map(model, x, target)[0]
    eps = 1e-6
    for i, j in [(10, 20), (32, 32), (50, 5)]:
        numeric = []
        for c in range(3):
            up, down = x.clone(), x.clone()
            up[0, c, i, j] += eps
            down[0, c, i, j] -= eps
            numeric.append(((model(up) - model(down))[0, target] / (2 * eps)).abs().item())
        assert gradient_map[i, j].item() == pytest.approx(max(numeric), rel=1e-4, abs=1e-9)


def _models():
    torch.manual_seed(0)
    yield "demo", DemoNet().eval(), 64
    models = torchvision_models()
    yield "resnet18", models.resnet18(weights=None).eval(), 96


@pytest.mark.parametrize("name, model, size", list(_models()), ids=lambda v: v if isinstance(v, str) else "")
def test_equals_captum_saliency(name, model, size):
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(3)
    x = torch.randn(2, 3, size, size)
    target = 1
    ours = saliency_map(model, x, target)
    theirs = captum_attr.Saliency(model).attribute(x, target=target, abs=True).amax(dim=1)
    scale = theirs.abs().max()
    assert scale > 0
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5 * scale)


def test_leaves_no_gradients_on_the_model():
    model = DemoNet().eval()
    saliency_map(model, torch.randn(1, 3, 64, 64), 0)
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
