"""Randomisation metrics: rank correlation and SSIM by their definitions, the randomised copy, and parity
with Quantus 0.6.0 (MPRT, RandomLogit) on the demo net and a random resnet18, with the same explanation
(gradient saliency, max of |d logit / d x| over channels) and the same seeds on both sides."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metric_cases import MODELS, import_quantus, model_and_inputs, predicted, relative_difference, saliency
from torch import nn

from nnvis_core.metrics import randomisation
from nnvis_core.metrics.catalog import MapInput
from nnvis_core.metrics.randomisation import (
    model_parameter_randomisation,
    random_logit,
    random_other_class,
    randomised_copy,
    rank,
    resettable_layers,
    spearman,
    ssim,
    weighted_layers,
)


class Recorder:
    """Quantus's explain_func (the same saliency, (N, 1, H, W)), keeping the classes it was asked for."""

    def __init__(self) -> None:
        self.targets: list[int] = []

    def __call__(self, model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs) -> np.ndarray:
        self.targets += [int(t) for t in np.asarray(targets).reshape(-1)]
        maps = [saliency(torch.as_tensor(np.asarray(x, dtype=np.float32))[None], int(t), model)
                for x, t in zip(inputs, np.asarray(targets).reshape(-1))]
        return np.stack(maps)[:, None]


@pytest.fixture(scope="module", params=MODELS)
def case(request):
    """(model, inputs (2, 3, 64, 64), predicted classes)."""
    model, inputs = model_and_inputs(request.param)
    return model, inputs, predicted(model, inputs)


@pytest.fixture(scope="module")
def quantus():
    return import_quantus()


# --- definitions, by hand ---------------------------------------------------------------------------------------

def test_rank_shares_ties_and_spearman_correlates_ranks():
    assert rank(np.array([10.0, 30.0, 20.0, 20.0])).tolist() == [1.0, 4.0, 2.5, 2.5]
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert spearman(a, a ** 3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    x, y = np.array([1.0, 2.0, 2.0, 5.0]), np.array([3.0, 1.0, 4.0, 4.0])
    assert spearman(x, y) == pytest.approx(0.5)  # ranks (1, 2.5, 2.5, 4) and (2, 1, 3.5, 3.5)
    assert spearman(np.zeros(4), y) == 0.0


def test_ssim_by_hand_on_one_window():
    # 3x3 maps, a 3-wide window: one window position, SSIM of the whole map with sample statistics.
    a = np.arange(9.0).reshape(3, 3)
    b = a[::-1].copy()
    span = 8.0
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
    mean_a, mean_b = a.mean(), b.mean()
    var_a, var_b = a.var(ddof=1), b.var(ddof=1)
    cov = ((a - mean_a) * (b - mean_b)).sum() / 8
    expected = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / ((mean_a ** 2 + mean_b ** 2 + c1) * (var_a + var_b + c2))
    assert ssim(a, b, window=3) == pytest.approx(expected)
    assert ssim(a, a, window=3) == pytest.approx(1.0)
    assert ssim(np.ones((3, 3)), np.ones((3, 3)), window=3) == 1.0


def test_ssim_is_skimages_structural_similarity():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 24)), rng.normal(size=(20, 24))
    b = a + 0.5 * b
    span = max(a.max(), b.max()) - min(a.min(), b.min())
    assert ssim(a, b) == pytest.approx(metrics.structural_similarity(a, b, data_range=span), rel=1e-10)
    flat = metrics.structural_similarity(a.ravel(), b.ravel(), data_range=span)
    assert ssim(a, b, flatten=True) == pytest.approx(flat, rel=1e-10)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(self.conv(x))).mean((2, 3)))


def test_the_randomised_copy_redraws_every_layer_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = Tiny().eval()
    with torch.no_grad():
        model.norm.weight.fill_(2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    copy = randomised_copy(model, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # torch's random stream as it was
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert weighted_layers(model) == ["conv", "head"]
    assert resettable_layers(model) == ["conv", "norm", "head"]
    assert not torch.equal(copy.conv.weight, model.conv.weight) and not torch.equal(copy.head.weight, model.head.weight)
    assert torch.equal(copy.norm.weight, model.norm.weight)  # not a weighted layer
    assert torch.equal(randomised_copy(model, seed=1).conv.weight, copy.conv.weight)  # seeded
    quantus_like = randomised_copy(model, layers="resettable", seed=1, seed_each_layer=True)
    assert torch.equal(quantus_like.norm.weight, torch.ones(4))
    torch.manual_seed(2)
    expected = nn.Conv2d(3, 4, 3, padding=1).weight  # the conv's draw right after seeding with seed + 1
    assert torch.equal(quantus_like.conv.weight, expected)


def test_mprt_is_the_similarity_with_the_map_of_the_randomised_model():
    torch.manual_seed(0)
    model, x = Tiny().eval(), torch.randn(1, 3, 8, 8)
    trained = saliency(x, 2, model)
    value = model_parameter_randomisation(model, x, 2, saliency, trained, seed=3)
    assert value == pytest.approx(spearman(np.abs(trained), np.abs(saliency(x, 2, randomised_copy(model, seed=3)))))
    assert model_parameter_randomisation(model, x, 2, saliency, trained, seed=3) == value  # seeded
    assert value < 0.9
    same = model_parameter_randomisation(model, x, 2, lambda i, t, m: trained, trained)
    assert same == pytest.approx(1.0)  # a map that ignores the model fails the test
    with pytest.raises(ValueError, match="similarity"):
        model_parameter_randomisation(model, x, 2, saliency, trained, similarity_name="cosine")


def test_random_logit_explains_another_class_than_the_target():
    torch.manual_seed(0)
    model, x = Tiny().eval(), torch.randn(1, 3, 8, 8)
    others = {random_other_class(model, x, 2, seed) for seed in range(40)}
    assert others == {0, 1, 3, 4}
    asked = []

    def explain(inputs: torch.Tensor, target: int, m: nn.Module) -> np.ndarray:
        asked.append(target)
        return saliency(inputs, target, m)

    trained = saliency(x, 2, model)
    value = random_logit(model, x, 2, explain, trained, seed=7)
    assert asked == [random_other_class(model, x, 2, 7)]
    assert value == pytest.approx(ssim(trained, saliency(x, asked[0], model)))
    assert random_logit(model, x, 2, explain, trained, other=2) == pytest.approx(1.0)


def test_catalog_entries():
    torch.manual_seed(0)
    model, x = Tiny().eval(), torch.randn(1, 3, 8, 8)
    item = MapInput(model, x, 2, saliency(x, 2, model), saliency, seed=4)
    by_name = {metric.name: metric for metric in randomisation.METRICS}
    assert by_name["mprt"].compute(item) == model_parameter_randomisation(model, x, 2, saliency, item.attribution,
                                                                          seed=4)
    assert by_name["random_logit"].compute(item) == random_logit(model, x, 2, saliency, item.attribution, seed=4)
    assert {m.category for m in randomisation.METRICS} == {"randomisation"}
    assert not any(m.cheap for m in randomisation.METRICS)


# --- parity with Quantus ------------------------------------------------------------------------------------------

def test_mprt_matches_quantus_with_the_same_draws(case, quantus):
    """Quantus re-initialises every module with reset_parameters, top down, seeding torch with seed + 1
    before each; nnvis does the same with layers="resettable", seed_each_layer=True. Compared: the
    similarity at the last level (every layer randomised), Spearman of the absolute maps."""
    model, inputs, targets = case
    explain = Recorder()
    attributions = explain(model, inputs.numpy(), targets)
    metric = quantus.MPRT(layer_order="top_down", seed=11, return_last_correlation=True, skip_layers=True,
                          abs=True, normalise=True, disable_warnings=True)
    theirs = metric(model=model, x_batch=inputs.numpy(), y_batch=targets, a_batch=attributions,
                    explain_func=explain, device="cpu")
    for i in range(len(targets)):
        ours = model_parameter_randomisation(model, inputs[i:i + 1], int(targets[i]), saliency, attributions[i, 0],
                                             layers="resettable", seed=11, seed_each_layer=True)
        assert relative_difference(ours, theirs[i]) < 1e-4


def test_random_logit_matches_quantus(case, quantus):
    """Quantus's defaults: SSIM of the flattened maps, each divided by its maximum (one image a call, since
    Quantus normalises by the maximum of the whole batch and draws the classes for the batch)."""
    model, inputs, targets = case
    classes = int(model(inputs[:1]).shape[1])
    for i in range(len(targets)):
        x, y = inputs[i:i + 1], targets[i:i + 1]
        explain = Recorder()
        attribution = explain(model, x.numpy(), y)
        metric = quantus.RandomLogit(num_classes=classes, seed=13, normalise=True, abs=False, disable_warnings=True)
        theirs = metric(model=model, x_batch=x.numpy(), y_batch=y, a_batch=attribution, explain_func=explain,
                        device="cpu")[0]
        assert explain.targets[-1] == random_other_class(model, x, int(y[0]), seed=13)
        ours = random_logit(model, x, int(y[0]), saliency, attribution[0, 0], similarity_name="ssim_flat",
                            normalise=True, seed=13)
        assert relative_difference(ours, theirs) < 1e-4


def test_the_random_class_needs_no_forward_pass_when_the_class_count_is_given():
    """A run knows how many classes its model has: the draw is the same without counting them."""
    class Refuses(nn.Module):
        def forward(self, x):
            raise AssertionError("no forward pass expected")

    x = torch.zeros(1, 3, 4, 4)
    counted = random_other_class(nn.Sequential(nn.Flatten(), nn.Linear(48, 10)), x, 3, seed=5)
    assert random_other_class(Refuses(), x, 3, seed=5, classes=10) == counted
