"""Axiomatic metrics: completeness and input invariance by their definitions on tiny models, and parity
with Quantus 0.6.0 (Completeness, InputInvariance) on the demo net and a random resnet18. Saliency is
invariant to a shift the model absorbs; gradient x input is not."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from metric_cases import MODELS, import_quantus, model_and_inputs, predicted, relative_difference, saliency
from torch import nn

from nnvis_core.metrics import axiomatic
from nnvis_core.metrics.axiomatic import completeness, input_invariance, shifted_network
from nnvis_core.metrics.catalog import MapInput


def gradient_x_input(inputs: torch.Tensor, target: int, model: nn.Module) -> np.ndarray:
    """(H, W) sum over channels of input * gradient: not invariant (the paper's point)."""
    x = inputs.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[0, target], x)
    return (grad * x).detach().sum(dim=1)[0].double().numpy()


class Recorder:
    """Quantus's explain_func for `explain`, (N, 1, H, W), keeping the inputs and maps of its last call."""

    def __init__(self, explain=saliency) -> None:
        self.explain = explain
        self.inputs: np.ndarray | None = None
        self.last: np.ndarray | None = None

    def __call__(self, model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs) -> np.ndarray:
        self.inputs = np.array(inputs)
        maps = [self.explain(torch.as_tensor(np.asarray(x, dtype=np.float32))[None], int(t), model)
                for x, t in zip(inputs, targets)]
        self.last = np.stack(maps)[:, None]
        return self.last


def black_input(name: str) -> torch.Tensor:
    """(1, 3, 64, 64) a black image, preprocessed as the model expects."""
    if name == "demo":
        from nnvis_core.demo.model import normalize

        return normalize(np.zeros((1, 64, 64, 3), dtype=np.uint8))
    from nnvis_core.models.loaded import IMAGENET_MEAN, IMAGENET_STD

    black = -torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return black.expand(1, 3, 64, 64).contiguous()


@pytest.fixture(scope="module", params=MODELS)
def case(request):
    """(model, inputs (2, 3, 64, 64), predicted classes, black baseline (1, 3, 64, 64))."""
    model, inputs = model_and_inputs(request.param)
    return model, inputs, predicted(model, inputs), black_input(request.param)


@pytest.fixture(scope="module")
def quantus():
    return import_quantus()


# --- definitions, by hand ---------------------------------------------------------------------------------------

class Linear(nn.Module):
    """f(x) = (w . x + b, -(w . x + b)) on (1, 1, 2, 2) inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.tensor([[1.0, -2.0], [0.5, 3.0]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x[:, 0] * self.w).flatten(1).sum(1, keepdim=True) + 0.25
        return torch.cat([score, -score], dim=1)


X = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
BASELINE = torch.zeros(1, 1, 2, 2)


def test_completeness_is_the_gap_between_the_sum_and_the_score_change():
    model = Linear()
    exact = (model.w * (X - BASELINE))[0].numpy()  # w * (x - x'): sums to f(x) - f(x') = 1 - 4 + 1.5 + 12 = 10.5
    assert completeness(model, X, 0, exact, BASELINE) == pytest.approx(0.0, abs=1e-6)
    assert completeness(model, X, 0, np.zeros((1, 2, 2)), BASELINE) == pytest.approx(10.5)
    assert completeness(model, X, 1, exact, BASELINE) == pytest.approx(21.0)  # class 1 changes by -10.5
    assert completeness(model, X, 0, exact * 1.1, BASELINE, relative=True) == pytest.approx(0.1)
    assert completeness(model, BASELINE, 0, np.zeros((1, 2, 2)), BASELINE, relative=True) is None


def test_completeness_needs_the_raw_attribution_and_what_the_method_completes_from():
    """Only a method that promises its total (completes_from: its baseline input, or "score") is scored;
    the black image every metric gets as `baseline` is not a promise."""
    model = Linear()
    metric = {m.name: m for m in axiomatic.METRICS}["completeness"]
    raw = np.zeros((1, 2, 2))
    item = MapInput(model, X, 0, np.ones((2, 2)), saliency, raw=raw, completes_from=BASELINE)
    assert metric.compute(item) == pytest.approx(10.5)
    with torch.no_grad():
        score = float(model(X)[0, 0])
    assert metric.compute(MapInput(model, X, 0, np.ones((2, 2)), saliency, raw=raw, completes_from="score")) == \
        pytest.approx(abs(score))  # a total of 0 against f(x) itself
    assert metric.compute(MapInput(model, X, 0, np.ones((2, 2)), saliency, completes_from=BASELINE)) is None
    assert metric.compute(MapInput(model, X, 0, np.ones((2, 2)), saliency, baseline=BASELINE, raw=raw)) is None


class TwoLayers(nn.Module):
    def __init__(self, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=padding)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).amax((2, 3)))


def test_the_shifted_network_absorbs_the_shift_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model, x = TwoLayers(padding=1).eval(), torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        expected, first_layer = model(x), model.conv(x)
        with shifted_network(model, -1.0, tuple(x.shape)) as shifted:  # the model itself, hooked
            assert torch.allclose(shifted(x - 1.0), expected, atol=1e-6)
        assert not model._forward_pre_hooks
        with shifted_network(model, -1.0, tuple(x.shape), how="first_layer_bias") as folded:
            assert folded is not model
            # zero padding: the bias cannot absorb the shift at the border
            assert not torch.allclose(folded.conv(x - 1.0), first_layer, atol=1e-4)
    unpadded = TwoLayers(padding=0).eval()
    with torch.no_grad(), shifted_network(unpadded, 2.0, tuple(x.shape), how="first_layer_bias") as folded:
        assert torch.allclose(folded(x + 2.0), unpadded(x), atol=1e-5)  # no border: Kindermans's bias is exact
    with pytest.raises(ValueError, match="how"):
        with shifted_network(model, 1.0, tuple(x.shape), how="weights"):
            pass


def test_the_gradient_is_input_invariant_and_gradient_x_input_is_not():
    torch.manual_seed(0)
    model, x = TwoLayers(padding=1).eval(), torch.randn(1, 3, 6, 6)
    assert input_invariance(model, x, 1, saliency, saliency(x, 1, model)) < 1e-6
    assert input_invariance(model, x, 1, gradient_x_input, gradient_x_input(x, 1, model)) > 0.1
    assert input_invariance(model, x, 1, saliency, np.zeros((6, 6))) is None
    assert not model._forward_pre_hooks


def test_catalog_entries():
    assert {m.category for m in axiomatic.METRICS} == {"axiomatic"}
    torch.manual_seed(0)
    model, x = TwoLayers(padding=1).eval(), torch.randn(1, 3, 6, 6)
    item = MapInput(model, x, 1, gradient_x_input(x, 1, model), gradient_x_input)
    metric = {m.name: m for m in axiomatic.METRICS}["input_invariance"]
    assert metric.compute(item) == input_invariance(model, x, 1, gradient_x_input, item.attribution)


# --- parity with Quantus ------------------------------------------------------------------------------------------

def test_completeness_matches_quantus(case, quantus):
    """Quantus's Completeness answers whether sum(a) == f(x) - f(x') exactly (a bool); its output_func
    receives f(x) - f(x'), which is recorded here to compare the gap itself. Raw attribution:
    gradient x (input - baseline), the black image as the baseline on both sides."""
    model, inputs, targets, black = case
    for i in range(len(targets)):
        x, y = inputs[i:i + 1], targets[i:i + 1]
        point = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(point)[0, int(y[0])], point)
        raw = (grad * (x - black))[0].double().numpy()
        changes = []

        def record(change: np.ndarray) -> np.ndarray:
            changes.append(np.asarray(change, dtype=np.float64))
            return change

        metric = quantus.Completeness(abs=False, normalise=False, output_func=record,
                                      perturb_baseline=black.reshape(1, -1).numpy(), disable_warnings=True)
        holds = metric(model=model, x_batch=x.numpy(), y_batch=y, a_batch=raw[None], device="cpu")[0]
        theirs = abs(raw.sum() - changes[0][0])
        ours = completeness(model, x, int(y[0]), raw, black)
        assert relative_difference(ours, theirs) < 1e-4
        assert bool(holds) == (ours == 0.0)


def quantus_ready(model: nn.Module) -> nn.Module:
    """The same function in a form Quantus's InputInvariance can shift: it writes into the bias of the
    model's first named submodule, so the demo net is flattened to one Sequential (its first conv first)
    and resnet18's conv1 gets a zero bias."""
    if hasattr(model, "features"):
        return nn.Sequential(*model.features, model.pool, *model.classifier).eval()
    model = copy.deepcopy(model)
    model.conv1.bias = nn.Parameter(torch.zeros(model.conv1.out_channels))
    return model


@pytest.mark.parametrize("explain", [saliency, gradient_x_input], ids=["saliency", "gradient_x_input"])
def test_input_invariance_matches_quantus(case, quantus, explain):
    """Quantus answers whether every value of the map stayed within 1e-4 (a bool) after shifting the input by
    -1 and folding the shift into the first layer's bias; the map its explain_func made on its shifted model
    is recorded, and nnvis's relative change with how="first_layer_bias" is compared with the one of that map.
    Quantus shifts every input value but the first (its perturb_batch drops index 0): nnvis is given that
    input."""
    model, inputs, targets, _ = case
    model = quantus_ready(model)
    for i in range(len(targets)):
        x, y = inputs[i:i + 1], targets[i:i + 1]
        attribution = explain(x, int(y[0]), model)
        recorder = Recorder(explain)
        metric = quantus.InputInvariance(input_shift=-1, abs=False, normalise=False, disable_warnings=True)
        holds = metric(model=model, x_batch=x.numpy(), y_batch=y, a_batch=attribution[None, None],
                       explain_func=recorder, device="cpu")[0]
        quantus_shifted = x - 1.0
        quantus_shifted[0, 0, 0, 0] = x[0, 0, 0, 0]
        assert np.array_equal(recorder.inputs, quantus_shifted.numpy())
        theirs = np.linalg.norm(recorder.last[0, 0] - attribution) / np.linalg.norm(attribution)
        ours = input_invariance(model, x, int(y[0]), explain, attribution, shift=-1.0, how="first_layer_bias",
                                shifted_inputs=quantus_shifted)
        assert relative_difference(ours, theirs) < 1e-4
        with shifted_network(model, -1.0, tuple(x.shape), how="first_layer_bias") as shifted:
            shifted_map = explain(quantus_shifted, int(y[0]), shifted)
        assert bool(holds) == bool(np.all(np.isclose(attribution, shifted_map, atol=1e-4)))
