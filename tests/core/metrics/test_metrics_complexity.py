"""Complexity metrics: their definitions on a few numbers, and parity with Quantus 0.6.0 on the demo net
and a random resnet18 (the metrics read the map alone; Quantus still wants the model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nnvis_core.metrics import complexity as complexity_module
from nnvis_core.metrics.catalog import MapInput
from nnvis_core.metrics.complexity import complexity, effective_complexity, sparseness


def test_sparseness_is_the_gini_index_of_the_magnitudes():
    assert sparseness(np.array([0.0, 0.0, 0.0, 1.0])) == 0.75  # all on one of n: (n - 1) / n
    assert sparseness(np.ones((2, 2))) == 0.0
    # Gini as the mean absolute difference: sum_ij |v_i - v_j| / (2 n^2 mean) = 20 / 80
    assert sparseness(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.25)
    assert sparseness(np.array([[-1.0, 2.0], [-3.0, 4.0]])) == pytest.approx(0.25)  # the sign does not count
    assert np.isnan(sparseness(np.zeros(4)))


def test_sparseness_offset_is_added_after_scaling_to_the_maximum():
    values = np.array([0.0, 2.0, 2.0, 4.0])
    shifted = np.array([0.0, 0.5, 0.5, 1.0]) + 0.1
    assert sparseness(values, offset=0.1) == pytest.approx(sparseness(shifted))
    assert sparseness(values, offset=0.1, scale=8.0) == pytest.approx(sparseness(values / 8 + 0.1))
    assert sparseness(np.zeros(4), offset=1e-7) == 0.0  # Quantus's offset makes a zero map uniform


def test_complexity_is_the_entropy_of_the_shares():
    assert complexity(np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(math.log(2))
    assert complexity(np.array([[0.0, -5.0], [0.0, 0.0]])) == 0.0
    assert complexity(np.ones(4)) == pytest.approx(math.log(4))
    assert complexity(np.array([1.0, 3.0])) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert np.isnan(complexity(np.zeros(3)))
    assert complexity(np.ones(4), log_epsilon=1e-12) == pytest.approx(math.log(4) - 4e-12, abs=1e-15)


def test_effective_complexity_counts_magnitudes_above_eps_of_the_maximum():
    values = np.array([1.0, 1e-6, 0.5, -0.2])
    assert effective_complexity(values) == 3.0  # 1e-6 is below 1e-5 of the maximum
    assert effective_complexity(values, eps=0.3) == 2.0
    assert effective_complexity(values * 1e-9) == 3.0  # relative: the map's units do not matter
    assert effective_complexity(values, eps=0.06, scale=10.0) == 1.0  # 0.1, 1e-7, 0.05, 0.02
    assert effective_complexity(np.zeros(5)) == 0.0


def test_catalog_entries_score_the_map_alone():
    attribution = np.array([[0.0, 1.0], [2.0, 1.0]])
    given = MapInput(model=nn.Sequential(), inputs=torch.zeros(1, 3, 2, 2), target=0, attribution=attribution,
                     explain=lambda *args: pytest.fail("a complexity metric explained again"))
    values = {metric.name: metric.compute(given) for metric in complexity_module.METRICS}
    assert values == {"sparseness": sparseness(attribution), "complexity": complexity(attribution),
                      "effective_complexity": 3.0}
    assert {metric.name: metric.better for metric in complexity_module.METRICS} == {
        "sparseness": "higher", "complexity": "lower", "effective_complexity": "lower"}
    given.attribution = np.zeros((2, 2))
    assert [metric.compute(given) for metric in complexity_module.METRICS] == [None, None, None]


# Parity with Quantus, with its defaults (abs=True, normalise=True: a / max |a| over the whole batch).

def _quantus():
    from nnvis_core.torchvision_compat import torchvision_models

    torchvision_models()
    return pytest.importorskip("quantus")


def _maps(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """Gradient x input (signed) and a blocky rectified copy of it (8x8 plateaus, half the image 0)."""
    inputs = x.clone().requires_grad_(True)
    model(inputs).gather(1, targets[:, None]).sum().backward()
    signed = (inputs.grad * x).sum(1, keepdim=True).double()
    coarse = nn.functional.interpolate(nn.functional.avg_pool2d(signed.relu(), 8), scale_factor=8, mode="nearest")
    blocky = coarse * (coarse > coarse.flatten(1).median(1).values.view(-1, 1, 1, 1))
    return torch.cat([signed, blocky])[:, 0].numpy()


@pytest.fixture(scope="module", params=["demo", "resnet18"])
def case(request):
    torch.manual_seed(0)
    if request.param == "demo":
        from nnvis_core.demo import load_demo_model
        from nnvis_core.demo.model import normalize
        from nnvis_core.demo.shapes import generate_dataset

        model = load_demo_model()
        images, _, labels = generate_dataset(3, seed=5)
        x, targets = normalize(images), torch.from_numpy(labels)
    else:
        import architecture_sweep as sweep

        model = sweep.build("resnet18")
        sweep.calibrate(model, 64)
        x = sweep.calibration_images(64)[:2]
        with torch.no_grad():
            targets = model(x).argmax(1)
    maps = _maps(model, x, targets)
    x, targets = torch.cat([x, x]), torch.cat([targets, targets])  # one input per map
    return {"model": model.eval(), "x": x.numpy(), "targets": targets.numpy(), "maps": maps}


def _quantus_scores(case, class_name: str, per_image: bool, **kwargs) -> np.ndarray:
    """Quantus's scores with its defaults; per_image: normalise each map by its own max, not the batch's."""
    quantus = _quantus()
    axes = {"normalise_func_kwargs": {"normalise_axes": (1, 2, 3)}} if per_image else {}
    metric = getattr(quantus, class_name)(disable_warnings=True, **axes, **kwargs)
    return np.asarray(metric(model=case["model"], x_batch=case["x"], y_batch=case["targets"],
                             a_batch=case["maps"][:, None].copy(), device="cpu"), np.float64)


@pytest.mark.parametrize("per_image", [True, False], ids=["map-max", "batch-max"])
def test_sparseness_matches_quantus(case, per_image):
    batch_max = None if per_image else np.abs(case["maps"]).max()
    ours = [sparseness(a, offset=1e-7, scale=batch_max) for a in case["maps"]]
    np.testing.assert_allclose(ours, _quantus_scores(case, "Sparseness", per_image), rtol=1e-4, atol=0)


@pytest.mark.parametrize("per_image", [True, False], ids=["map-max", "batch-max"])
def test_complexity_matches_quantus(case, per_image):
    ours = [complexity(a, log_epsilon=1e-12) for a in case["maps"]]
    np.testing.assert_allclose(ours, _quantus_scores(case, "Complexity", per_image), rtol=1e-4, atol=0)
    paper = [complexity(a) for a in case["maps"]]  # Quantus's 1e-12 moves it by about n * 1e-12
    np.testing.assert_allclose(paper, ours, rtol=1e-8, atol=0)


@pytest.mark.parametrize("eps", [1e-5, 0.1])
@pytest.mark.parametrize("per_image", [True, False], ids=["map-max", "batch-max"])
def test_effective_complexity_matches_quantus(case, per_image, eps):
    batch_max = None if per_image else np.abs(case["maps"]).max()
    ours = [effective_complexity(a, eps=eps, scale=batch_max) for a in case["maps"]]
    np.testing.assert_array_equal(ours, _quantus_scores(case, "EffectiveComplexity", per_image, eps=eps))


def test_effective_complexity_of_an_image_depends_on_its_batch_in_quantus_not_in_nnvis(case):
    """The departure made visible: Quantus's default scale is the batch's max |a|, nnvis's the map's own."""
    own = [effective_complexity(a, eps=0.1) for a in case["maps"]]
    batch = _quantus_scores(case, "EffectiveComplexity", per_image=False, eps=0.1)
    assert np.any(np.asarray(own) != batch)
