"""Backward rules (deconvnet, guided backprop) on every way a model can compute a ReLU,
and the model left exactly as it was, even when a method fails midway."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnvis_core.toolkit import UnsupportedActivation, gradient, model_state, preserved, relu_rule
from nnvis_plugins.attribution import deconvnet, gradcam, guided_backprop

RULES = {"guided": guided_backprop.attribute, "deconvnet": deconvnet.attribute}


class TwoLayer(nn.Module):
    """x -> W1 -> ReLU -> W2 -> ReLU -> W3, the ReLU computed in one of several ways."""

    def __init__(self, style: str):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.style = style
        if style == "module":
            self.act1, self.act2 = nn.ReLU(), nn.ReLU()
        elif style == "inplace":
            self.act1, self.act2 = nn.ReLU(inplace=True), nn.ReLU(inplace=True)
        elif style == "reused":
            self.act = nn.ReLU()
            self.act1 = self.act2 = self.act

    def relu(self, x: torch.Tensor, which: int) -> torch.Tensor:
        if self.style in ("module", "inplace", "reused"):
            return (self.act1 if which == 1 else self.act2)(x)
        if self.style == "functional":
            return F.relu(x)
        if self.style == "functional_inplace":
            return F.relu(x, inplace=True)
        if self.style == "torch_relu":
            return torch.relu(x)
        if self.style == "method_inplace":
            x.relu_()  # result used through the mutated tensor, not the return value
            return x
        if self.style == "torch_relu_":
            return torch.relu_(x)
        raise AssertionError(self.style)

    def forward(self, x):
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x), 1)), 2))


STYLES = ["module", "inplace", "reused", "functional", "functional_inplace", "torch_relu", "method_inplace",
          "torch_relu_"]


def reference(model: TwoLayer, x: torch.Tensor, target: int, rule: str) -> torch.Tensor:
    """The rule written out by hand with the weight matrices (one input row)."""
    h1 = model.fc1(x)[0]
    h2 = model.fc2(h1.relu())
    g = model.fc3.weight[target]  # d score / d relu(h2)

    def through(grad, pre):
        grad = grad.clamp(min=0)
        return grad * (pre > 0) if rule == "guided" else grad

    g = through(g, h2) @ model.fc2.weight
    g = through(g, h1) @ model.fc1.weight
    return g


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("style", STYLES)
def test_rule_matches_the_hand_written_rule_for_every_relu_style(style, rule):
    model = TwoLayer(style).eval()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    result = RULES[rule](model, x, 2)
    with torch.no_grad():
        expected = torch.stack([reference(model, row[None], 2, rule) for row in x])
    assert torch.allclose(result, expected, atol=1e-6)
    # the rule really differs from the gradient here, so the test can tell them apart
    assert not torch.allclose(result, gradient(model, x, 2), atol=1e-4)


def test_reused_relu_in_a_residual_block_equals_separate_relus():
    class Block(nn.Module):
        def __init__(self, reuse: bool):
            super().__init__()
            torch.manual_seed(0)
            self.conv1, self.conv2 = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
            self.relu = nn.ReLU(inplace=True)
            self.relu2 = self.relu if reuse else nn.ReLU(inplace=True)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))

        def forward(self, x):  # like torchvision's BasicBlock: one ReLU module, used twice
            out = self.relu(self.conv1(x))
            out = self.conv2(out) + x
            return self.head(self.relu2(out))

    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    for attribute in RULES.values():
        assert torch.equal(attribute(Block(True).eval(), x, 1), attribute(Block(False).eval(), x, 1))


@pytest.mark.parametrize("activation", [nn.Tanh(), nn.Softsign(), nn.Threshold(0.1, 0.0), nn.RReLU().train()])
def test_unsupported_activation_modules_are_named(activation):
    model = nn.Sequential(nn.Linear(4, 4), activation, nn.Linear(4, 2))
    model[0].train(False)  # the RReLU alone is training: its random slopes have no rule
    with pytest.raises(UnsupportedActivation, match=rf"1 \({type(activation).__name__}[,)]") as refused:
        guided_backprop.attribute(model, torch.randn(1, 4), 0)
    assert "defined for ReLU, ReLU6, LeakyReLU" in str(refused.value)  # says what is supported


def test_unsupported_functional_activation_is_named():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(F.softsign(x))

    model = Functional()
    before = model_state(model)
    with pytest.raises(UnsupportedActivation, match="softsign"):
        deconvnet.attribute(model, torch.randn(1, 4), 0)
    assert model_state(model) == before
    assert torch._C._len_torch_function_stack() == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_models_are_refused():
    model = torch.jit.script(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))
    with pytest.raises(UnsupportedActivation, match="TorchScript"):
        guided_backprop.attribute(model, torch.randn(1, 4), 0)


class FailsMidway(nn.Module):
    """Two ReLUs, then a failure between them when `fail` is set."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        self.fail = False

    def forward(self, x):
        x = self.relu(self.conv(x))
        if self.fail:
            raise RuntimeError("failure midway")
        return self.head(F.relu(x))


@pytest.mark.parametrize("method", ["guided", "deconvnet", "gradcam"])
def test_a_failure_midway_leaves_the_model_as_it_was(method):
    model = FailsMidway().eval()
    x = torch.randn(2, 3, 8, 8)
    plain = gradient(model, x, 1)
    before = model_state(model)
    model.fail = True
    with pytest.raises(RuntimeError, match="failure midway"):
        if method == "gradcam":
            gradcam.attribute(model, x, 1, layer=model.conv)
        else:
            RULES[method](model, x, 1)
    model.fail = False
    assert model_state(model) == before
    assert torch._C._len_torch_function_stack() == 0  # no interception left behind
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(gradient(model, x, 1), plain)  # ordinary gradients again


def test_rule_is_scoped_to_its_block():
    model = TwoLayer("functional").eval()
    x = torch.randn(3, 6)
    with relu_rule(model, "guided"):
        pass
    assert torch.allclose(gradient(model, x, 0), torch.autograd.functional.jacobian(
        lambda v: model(v)[:, 0].sum(), x), atol=1e-6)


def test_preserved_restores_hooks_modes_flags_and_grads_after_a_failure():
    model = FailsMidway().eval()
    model.conv.weight.grad = marker = torch.ones_like(model.conv.weight)
    before = model_state(model)
    with pytest.raises(KeyError):
        with preserved(model):
            model.conv.register_forward_hook(lambda *a: None)
            model.head.register_forward_pre_hook(lambda *a: None)
            model.train()
            model.conv.bias.requires_grad_(False)
            model.conv.weight.grad = None
            model.head[2].weight.grad = torch.zeros_like(model.head[2].weight)
            raise KeyError("boom")
    assert model_state(model) == before
    assert model.conv.weight.grad is marker and not model.training


def test_rules_run_under_no_grad_callers_and_leave_no_parameter_gradients():
    model = TwoLayer("inplace").eval()
    with torch.no_grad():
        result = guided_backprop.attribute(model, torch.randn(2, 6), 1)
    assert result.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
