"""Robustness metrics: their definitions on a tiny hand-made case, and parity with Quantus 0.6.0 on the
demo net and a random resnet18, with the same noise given to both sides and the same explanation
(gradient saliency, max of |d logit / d x| over channels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metric_cases import MODELS, import_quantus, model_and_inputs, predicted, relative_difference, saliency
from torch import nn

from nnvis_core.metrics import robustness
from nnvis_core.metrics.catalog import MapInput
from nnvis_core.metrics.robustness import (
    avg_sensitivity,
    gaussian_noise,
    local_lipschitz_estimate,
    max_sensitivity,
    sensitivities,
    uniform_noise,
)

SAMPLES = 3


def quantus_explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs) -> np.ndarray:
    """Quantus's explain_func: the same saliency, (N, 1, H, W)."""
    maps = [saliency(torch.as_tensor(np.asarray(x, dtype=np.float32))[None], int(t), model)
            for x, t in zip(inputs, targets)]
    return np.stack(maps)[:, None]


def replay(noise: torch.Tensor):
    """A Quantus perturb_func that adds noise[0], noise[1], ... on its successive calls (to every row)."""
    draws = iter(noise.reshape(noise.shape[0], -1).numpy())

    def perturb(arr: np.ndarray, **kwargs) -> np.ndarray:
        return arr + next(draws)[None]

    return perturb


@pytest.fixture(scope="module", params=MODELS)
def case(request):
    """(model, inputs (2, 3, 64, 64), predicted classes)."""
    model, inputs = model_and_inputs(request.param)
    return model, inputs, predicted(model, inputs)


@pytest.fixture(scope="module")
def quantus():
    return import_quantus()


# --- definitions, by hand ---------------------------------------------------------------------------------------

class SignOfSum(nn.Module):
    """Two classes: 1 when the input's sum is positive."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = x.flatten(1).sum(1, keepdim=True)
        return torch.cat([-total, total], dim=1)


def first_channel(inputs: torch.Tensor, target: int, model: nn.Module) -> np.ndarray:
    """A map that is the input's first channel: e(x + d) - e(x) = d[0]."""
    return inputs[0, 0].double().numpy()


X = torch.tensor([[[[3.0, 0.0], [0.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]]])  # (1, 2, 2, 2): ||x[0]|| = 5
NOISE = torch.zeros(3, 2, 2, 2)
NOISE[0, 0, 0, 0] = 0.5  # moves the map by 0.5
NOISE[1, 0, 1, 1] = -1.0  # by 1.0
NOISE[2, 1] = -3.0  # moves only the second channel (map unchanged), and flips the sign of the sum


def test_sensitivity_is_the_map_change_over_the_map_norm():
    ratios = sensitivities(SignOfSum(), X, 1, first_channel, X[0, 0].numpy(), noise=NOISE)
    assert ratios.tolist() == pytest.approx([0.1, 0.2, 0.0])
    assert max_sensitivity(SignOfSum(), X, 1, first_channel, X[0, 0].numpy(), noise=NOISE) == pytest.approx(0.2)
    assert avg_sensitivity(SignOfSum(), X, 1, first_channel, X[0, 0].numpy(), noise=NOISE) == pytest.approx(0.1)
    plain = max_sensitivity(SignOfSum(), X, 1, first_channel, X[0, 0].numpy(), noise=NOISE, relative=False)
    assert plain == pytest.approx(1.0)  # Yeh et al.'s definition as written: the difference itself


def test_a_draw_that_changes_the_class_is_kept_skipped_or_voids_the_score():
    def average(mode: str) -> float | None:
        return avg_sensitivity(SignOfSum(), X, 1, first_channel, X[0, 0].numpy(), noise=NOISE,
                               changed_prediction=mode)

    assert average("keep") == pytest.approx(0.1)  # (0.1 + 0.2 + 0) / 3
    assert average("skip") == pytest.approx(0.15)  # the third draw left out
    assert average("none") is None  # Quantus's return_nan_when_prediction_changes=True
    with pytest.raises(ValueError, match="changed_prediction"):
        average("drop")


def test_local_lipschitz_is_the_map_change_per_input_change():
    def doubled(inputs: torch.Tensor, target: int, model: nn.Module) -> np.ndarray:
        return 2 * first_channel(inputs, target, model)

    noise = NOISE[:2]  # moves only the first channel: ||2 d|| / ||d|| = 2
    value = local_lipschitz_estimate(SignOfSum(), X, 1, doubled, 2 * X[0, 0].numpy(), noise=noise)
    assert value == pytest.approx(2.0)
    # normalise=True (Quantus): each map over its max |value|: clean 8 -> /8, first draw (7, 0; 0, 8) -> /8
    normalised = local_lipschitz_estimate(SignOfSum(), X, 1, doubled, 2 * X[0, 0].numpy(), noise=noise[:1],
                                          normalise=True)
    assert normalised == pytest.approx(np.hypot(1.0 / 8, 0.0) / 0.5)


def test_a_zero_map_has_no_sensitivity():
    assert max_sensitivity(SignOfSum(), X, 1, first_channel, np.zeros((2, 2)), noise=NOISE) is None


def test_noise_is_seeded_and_within_its_bounds():
    first, again = uniform_noise((3, 4, 4), 5, 0.2, seed=1), uniform_noise((3, 4, 4), 5, 0.2, seed=1)
    assert torch.equal(first, again) and first.abs().max() <= 0.2 and first.shape == (5, 3, 4, 4)
    assert not torch.equal(first, uniform_noise((3, 4, 4), 5, 0.2, seed=2))
    assert gaussian_noise((3, 8, 8), 50, 0.1, seed=0).std() == pytest.approx(0.1, rel=0.05)


def test_the_catalog_shares_the_draws_of_max_and_average_sensitivity():
    calls = []

    def counted(inputs: torch.Tensor, target: int, model: nn.Module) -> np.ndarray:
        calls.append(1)
        return first_channel(inputs, target, model)

    item = MapInput(SignOfSum(), X, 1, X[0, 0].double().numpy(), counted)
    by_name = {metric.name: metric for metric in robustness.METRICS}
    maximum, mean = by_name["max_sensitivity"].compute(item), by_name["avg_sensitivity"].compute(item)
    assert len(calls) == robustness.SAMPLES
    ratios = sensitivities(SignOfSum(), X, 1, first_channel, X[0, 0].numpy(), seed=item.seed)
    assert (maximum, mean) == pytest.approx((ratios.max(), ratios.mean()))
    assert {m.category for m in robustness.METRICS} == {"robustness"}
    assert not any(m.cheap for m in robustness.METRICS)


# --- parity with Quantus ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["MaxSensitivity", "AvgSensitivity"])
def test_sensitivity_matches_quantus(case, quantus, name):
    model, inputs, targets = case
    noise = uniform_noise(tuple(inputs.shape[1:]), SAMPLES, 0.2, seed=3)
    attributions = quantus_explain(model, inputs.numpy(), targets)
    metric = getattr(quantus, name)(nr_samples=SAMPLES, lower_bound=0.2, perturb_func=replay(noise),
                                    normalise=False, abs=False, disable_warnings=True)
    theirs = metric(model=model, x_batch=inputs.numpy(), y_batch=targets, a_batch=attributions,
                    explain_func=quantus_explain, device="cpu")
    ours_function = max_sensitivity if name == "MaxSensitivity" else avg_sensitivity
    for i in range(len(targets)):
        ours = ours_function(model, inputs[i:i + 1], int(targets[i]), saliency, attributions[i, 0], noise=noise)
        assert relative_difference(ours, theirs[i]) < 1e-4


def test_a_changed_class_voids_the_score_as_in_quantus(case, quantus):
    model, inputs, targets = case
    noise = uniform_noise(tuple(inputs.shape[1:]), SAMPLES, 3.0, seed=4)  # large enough to move some class
    attributions = quantus_explain(model, inputs.numpy(), targets)
    metric = quantus.MaxSensitivity(nr_samples=SAMPLES, perturb_func=replay(noise), normalise=False, abs=False,
                                    return_nan_when_prediction_changes=True, disable_warnings=True)
    theirs = metric(model=model, x_batch=inputs.numpy(), y_batch=targets, a_batch=attributions,
                    explain_func=quantus_explain, device="cpu")
    ours = [max_sensitivity(model, inputs[i:i + 1], int(targets[i]), saliency, attributions[i, 0], noise=noise,
                            changed_prediction="none") for i in range(len(targets))]
    assert [value is None for value in ours] == [bool(np.isnan(value)) for value in theirs]
    assert any(value is None for value in ours)  # the case is exercised
    for value, quantus_value in zip(ours, theirs):
        if value is not None:
            assert relative_difference(value, quantus_value) < 1e-4


@pytest.mark.parametrize("normalise", [False, True])
def test_local_lipschitz_matches_quantus(case, quantus, normalise):
    model, inputs, targets = case
    noise = gaussian_noise(tuple(inputs.shape[1:]), SAMPLES, 0.1, seed=5)
    for i in range(len(targets)):  # one image a call: Quantus normalises by the maximum of the whole batch
        x, y = inputs[i:i + 1], targets[i:i + 1]
        attribution = quantus_explain(model, x.numpy(), y)
        metric = quantus.LocalLipschitzEstimate(nr_samples=SAMPLES, perturb_std=0.1, perturb_func=replay(noise),
                                                normalise=normalise, abs=False, disable_warnings=True)
        theirs = metric(model=model, x_batch=x.numpy(), y_batch=y, a_batch=attribution,
                        explain_func=quantus_explain, device="cpu")[0]
        ours = local_lipschitz_estimate(model, x, int(y[0]), saliency, attribution[0, 0], noise=noise,
                                        normalise=normalise, eps=1e-10)
        assert relative_difference(ours, theirs) < 1e-4
