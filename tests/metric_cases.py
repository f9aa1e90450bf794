"""What the trust metrics' parity tests share (tests/core/metrics): the two models each metric is
checked on, the explanation both nnvis and Quantus recompute, and Quantus itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

MODELS = ("demo", "resnet18")  # the trained demo net, and a random resnet18 with the sweep's scaling


def model_and_inputs(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The model and two preprocessed 64-px images: demo shapes for the demo net, the sweep's calibration
    images for resnet18 (contiguous, as Quantus's numpy copies are: a channels-last input takes other
    conv kernels, whose rounding the scaled resnet magnifies)."""
    if name == "demo":
        from nnvis_core.demo import load_demo_model
        from nnvis_core.demo.model import normalize
        from nnvis_core.demo.shapes import generate_dataset

        images, _, _ = generate_dataset(2, seed=5)
        return load_demo_model(), normalize(images)
    import architecture_sweep as sweep

    model = sweep.build("resnet18")
    sweep.calibrate(model, 64)
    return model, sweep.calibration_images(64)[:2].contiguous()


def predicted(model: nn.Module, inputs: torch.Tensor) -> np.ndarray:
    """The classes the model predicts, the targets every parity test explains."""
    with torch.no_grad():
        return model(inputs).argmax(dim=1).numpy()


def saliency(inputs: torch.Tensor, target: int, model: nn.Module) -> np.ndarray:
    """(H, W) max over channels of |d logit_target / d input|: the explanation both sides recompute."""
    x = inputs.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[0, target], x)
    return grad.abs().amax(dim=1)[0].double().numpy()


def import_quantus():
    """Quantus 0.6 (a test-only reference), imported after the torchvision workaround it needs."""
    from nnvis_core.torchvision_compat import torchvision_models

    torchvision_models()
    return pytest.importorskip("quantus")


def relative_difference(ours: float, theirs: float) -> float:
    return abs(ours - theirs) / max(abs(theirs), 1e-12)
