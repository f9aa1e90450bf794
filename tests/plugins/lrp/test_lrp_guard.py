"""LRP never changes the loaded model, and refuses in one line, naming the layer, what it has no rule for."""

from __future__ import annotations

from collections import OrderedDict

import lrp_models as models
import pytest
import torch
from torch import nn

from nnvis_core.toolkit import AttributionError, guarded_state
from nnvis_plugins import lrp

setup_module, teardown_module = models.one_thread()

BOUNDS = (torch.full((1, 3, 1, 1), -2.0), torch.full((1, 3, 1, 1), 2.5))


def snapshot(model: nn.Module) -> dict:
    """Everything a run could change: the guard's view (modes, hooks, flags, gradients, storage), the
    values of the weights and buffers, the modules and any forward set on an instance."""
    return {"guard": guarded_state(model),
            "values": {key: value.clone() for key, value in model.state_dict().items()},
            "modules": [(name, type(module), "forward" in vars(module)) for name, module in model.named_modules()]}


def same(before: dict, after: dict) -> bool:
    return (before["guard"] == after["guard"] and before["modules"] == after["modules"]
            and before["values"].keys() == after["values"].keys()
            and all(torch.equal(before["values"][key], after["values"][key]) for key in before["values"]))


@pytest.mark.parametrize("composite", list(lrp.COMPOSITES))
def test_the_model_is_left_as_it_was(composite):
    """BatchNorm merged, ResNet forwards replaced, rules installed: on the copy only. The model is even
    left training (with its BatchNorm statistics untouched) while LRP explains it in eval mode."""
    residual = models.residual()
    image = models.image()
    model = residual.float().train()
    before = snapshot(model)
    lrp.attribute(model, image.float(), 0, composite=composite, bounds=BOUNDS)
    assert same(before, snapshot(model))


def network(layer: nn.Module) -> nn.Module:
    """features.3 is `layer`, between two convs."""
    features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), layer)
    return nn.Sequential(OrderedDict(features=features, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                                     head=nn.Linear(4, 3))).eval()


class Scale(nn.Module):
    """A leaf with a parameter its forward multiplies by (timm's LayerScale in small)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), 3.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


class NormThenAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d in small: a BatchNorm that applies an activation (a child) in its own forward."""

    def __init__(self) -> None:
        super().__init__(4)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class GELU(nn.Module):
    """A GELU of its own (as timm's): not torch's class, but its forward calls F.gelu, which has a rule."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(x)


@pytest.mark.parametrize(("layer", "words"), [
    (NormThenAct().eval(), "no rule for layer features.3 (NormThenAct, a BatchNorm2d with a forward of its own"),
    (nn.Tanh(), "no rule for the non-linearity tanh in features.3 (Tanh)"),
    (nn.GroupNorm(2, 4), "no rule for F.group_norm, a function LRP has no rule for in features.3 (GroupNorm)"),
    (Residual(), "no rule for the sum of two activations in features.3 (Residual)"),
    (Gate(), "no rule for the non-linearity sigmoid in features.3 (Gate)"),
])
def test_a_layer_without_a_rule_is_refused_in_one_line(layer, words):
    model = network(layer)
    before = snapshot(model)
    with pytest.raises(AttributionError) as refused:
        lrp.attribute(model, torch.randn(1, 3, 8, 8), 0)
    message = str(refused.value)
    assert message.startswith("LRP: ") and words in message and "\n" not in message, message
    assert same(before, snapshot(model))


@pytest.mark.parametrize(("layer", "same_as"), [(GELU(), nn.GELU()), (Scale(), nn.Identity())],
                         ids=["own-gelu", "scale"])
def test_a_module_of_unknown_type_is_judged_by_the_calls_it_makes(layer, same_as):
    """A GELU of timm's own calls F.gelu: the activation rule, as torch's GELU gets. A product with a
    parameter is a product with a constant: relevance passes unchanged (the gradient would triple it)."""
    torch.manual_seed(8)
    model = network(layer)
    other = network(same_as)
    other.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(1, 3, 8, 8)
    expected = lrp.attribute(other, x, 0)
    if isinstance(layer, Scale):  # a scaled head: the same map as the unscaled net with 3x the head's input
        with torch.no_grad():
            other.head.weight.mul_(3.0)
        expected = lrp.attribute(other, x, 0)
    torch.testing.assert_close(lrp.attribute(model, x, 0), expected, rtol=1e-4, atol=1e-6)


class WithAuxiliary(nn.Module):
    """A head defined and never called, as GoogLeNet's auxiliary classifiers in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.main, self.auxiliary = network(nn.Identity()), nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def test_a_module_that_does_not_run_needs_no_rule():
    assert lrp.attribute(WithAuxiliary().eval(), torch.randn(1, 3, 8, 8), 0).shape == (1, 3, 8, 8)


def test_a_batch_norm_before_its_activation_shares_relevance_in_proportion():
    """Pre-activation BatchNorm (no Conv or Linear right before it) is an affine map per channel: it keeps
    its place, with the proportional rule, and without a shift conserves relevance."""
    torch.manual_seed(6)
    norm = nn.BatchNorm2d(3)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    model = nn.Sequential(norm, nn.ReLU(), nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.Flatten(),
                          nn.Linear(144, 2, bias=False)).double().eval()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    record: dict[str, torch.Tensor] = {}
    relevance = lrp.attribute(model, x, 1, rules="conv=epsilon", epsilon=1e-9, record=record)
    assert "0" in record
    assert float(relevance.sum()) == pytest.approx(float(model(x)[0, 1].detach()), rel=1e-5)


@pytest.mark.parametrize(("rules", "words"), [
    ("conv=sideways", "unknown rule 'sideways'"), ("pool=flat", "KEY one of first, conv, linear"),
    ("conv=z-box", "z-box is for the first layer only"),
])
def test_a_wrong_override_is_refused_naming_it(rules, words):
    with pytest.raises(AttributionError, match=words):
        lrp.attribute(network(nn.Identity()), torch.randn(1, 3, 8, 8), 0, rules=rules)


def test_the_box_rule_without_bounds_is_refused():
    with pytest.raises(AttributionError, match="needs bounds"):
        lrp.attribute(network(nn.Identity()), torch.randn(1, 3, 8, 8), 0, composite="epsilon-gamma-box")
