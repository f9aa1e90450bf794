"""Guided backpropagation and deconvnet through activations other than ReLU.

For y = f(x) with incoming gradient g = dL/dy the rules are
    guided:    dL/dx = f'(x) * max(g, 0)
    deconvnet: dL/dx = max(g, 0)
The expected input gradients below are written out by hand from these formulas, with
each activation's derivative written analytically (not taken from torch's backward),
for module, functional and in-place forms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnvis_core.toolkit import UnsupportedActivation, gradient, model_state, relu_rule

Tensor = torch.Tensor
RULES = ("guided", "deconvnet")
WIDTH = 8
PRELU_SLOPES = torch.linspace(-0.25, 0.5, WIDTH)  # a negative slope too: f'(x) < 0 there
SELU_SCALE, SELU_ALPHA = 1.0507009873554805, 1.6732632423543772
GELU_TANH_C = math.sqrt(2 / math.pi)


def in_place(func: Callable[..., object], *args, **kwargs) -> Callable[[Tensor], Tensor]:
    """An activation applied in place whose return value is ignored (the mutated tensor is used)."""

    def apply(h: Tensor) -> Tensor:
        func(h, *args, **kwargs)
        return h

    return apply


def channel_view(slopes: Tensor, like: Tensor) -> Tensor:
    """PReLU slopes broadcast along dim 1 of `like` (features or channels)."""
    return slopes.to(like.dtype).view(1, -1, *([1] * (like.dim() - 2)))


def sigmoid(x: Tensor) -> Tensor:
    return 1 / (1 + torch.exp(-x))


def softplus(x: Tensor) -> Tensor:
    return torch.log1p(torch.exp(x))


# f'(x) written out for each activation.
def d_gelu_tanh(x: Tensor) -> Tensor:
    t = torch.tanh(GELU_TANH_C * (x + 0.044715 * x ** 3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * GELU_TANH_C * (1 + 3 * 0.044715 * x ** 2)


def d_gelu(x: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-x ** 2 / 2) / math.sqrt(2 * math.pi)


def d_mish(x: Tensor) -> Tensor:
    t = torch.tanh(softplus(x))
    return t + x * (1 - t ** 2) * sigmoid(x)


def d_hardswish(x: Tensor) -> Tensor:
    return torch.where(x < -3, 0.0, torch.where(x > 3, 1.0, (2 * x + 3) / 6))


def negative_side(x: Tensor, below: Tensor | float) -> Tensor:
    """1 for x > 0, `below` otherwise."""
    return torch.where(x > 0, torch.ones_like(x), below)


@dataclass
class Case:
    name: str
    derivative: Callable[[Tensor], Tensor]
    module: Callable[[], nn.Module]
    forms: dict[str, Callable[[Tensor], Tensor]] = field(default_factory=dict)  # functional and in-place forms


def prelu_module(width: int = WIDTH) -> nn.Module:
    module = nn.PReLU(width)
    with torch.no_grad():
        module.weight.copy_(torch.linspace(-0.25, 0.5, width))
    return module


CASES = [
    Case("relu6", lambda x: ((x > 0) & (x < 6)).to(x.dtype), nn.ReLU6, {
        "functional": F.relu6,
        "module_inplace": nn.ReLU6(inplace=True),
        "functional_inplace": lambda h: F.relu6(h, inplace=True),
        "hardtanh_": in_place(F.hardtanh_, 0.0, 6.0),
    }),
    Case("hardtanh", lambda x: ((x > -0.5) & (x < 0.8)).to(x.dtype), lambda: nn.Hardtanh(-0.5, 0.8), {
        "functional": lambda h: F.hardtanh(h, -0.5, 0.8),
        "functional_inplace": in_place(F.hardtanh, -0.5, 0.8, inplace=True),
        "module_inplace": nn.Hardtanh(-0.5, 0.8, inplace=True),
    }),
    Case("leaky_relu", lambda x: negative_side(x, 0.1), lambda: nn.LeakyReLU(0.1), {
        "functional": lambda h: F.leaky_relu(h, 0.1),
        "module_inplace": nn.LeakyReLU(0.1, inplace=True),
        "leaky_relu_": in_place(F.leaky_relu_, 0.1),
    }),
    Case("prelu", lambda x: negative_side(x, channel_view(PRELU_SLOPES, x)), prelu_module, {
        "functional": lambda h: F.prelu(h, PRELU_SLOPES),
        "tensor_method": lambda h: h.prelu(PRELU_SLOPES),
    }),
    Case("rrelu_eval", lambda x: negative_side(x, (0.1 + 0.3) / 2), lambda: nn.RReLU(0.1, 0.3).eval(), {
        "functional": lambda h: F.rrelu(h, 0.1, 0.3, training=False),
        "rrelu_": in_place(F.rrelu_, 0.1, 0.3),
    }),
    Case("elu", lambda x: negative_side(x, 0.7 * torch.exp(x)), lambda: nn.ELU(0.7), {
        "functional": lambda h: F.elu(h, 0.7),
        "module_inplace": nn.ELU(0.7, inplace=True),
        "elu_": in_place(F.elu_, 0.7),
    }),
    Case("celu", lambda x: negative_side(x, torch.exp(x / 1.3)), lambda: nn.CELU(1.3), {
        "functional": lambda h: torch.celu(h, 1.3),
        "module_inplace": nn.CELU(1.3, inplace=True),
        "celu_": in_place(torch.celu_, 1.3),
    }),
    Case("selu", lambda x: SELU_SCALE * negative_side(x, SELU_ALPHA * torch.exp(x)), nn.SELU, {
        "functional": F.selu,
        "module_inplace": nn.SELU(inplace=True),
        "selu_": in_place(torch.selu_),
    }),
    Case("hardswish", d_hardswish, nn.Hardswish, {
        "functional": F.hardswish,
        "module_inplace": nn.Hardswish(inplace=True),
        "functional_inplace": in_place(F.hardswish, inplace=True),
    }),
    Case("silu", lambda x: sigmoid(x) * (1 + x * (1 - sigmoid(x))), nn.SiLU, {
        "functional": F.silu,
        "module_inplace": nn.SiLU(inplace=True),
        "functional_inplace": in_place(F.silu, inplace=True),
    }),
    Case("gelu", d_gelu, nn.GELU, {"functional": F.gelu}),
    Case("gelu_tanh", d_gelu_tanh, lambda: nn.GELU(approximate="tanh"), {
        "functional": lambda h: F.gelu(h, approximate="tanh"),
    }),
    Case("mish", d_mish, nn.Mish, {
        "functional": F.mish,
        "module_inplace": nn.Mish(inplace=True),
        "functional_inplace": in_place(F.mish, inplace=True),
    }),
    Case("softplus", lambda x: sigmoid(2 * x), lambda: nn.Softplus(beta=2.0), {
        "functional": lambda h: F.softplus(h, beta=2.0),
    }),
]
CASE_FORMS = [(case, form) for case in CASES for form in ["module", *case.forms]]


class TwoActivations(nn.Module):
    """x -> fc1 -> act -> fc2 -> act -> fc3: the second rule feeds the first."""

    def __init__(self, case: Case, form: str):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, WIDTH), nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, 3)
        with torch.no_grad():  # wide pre-activations: both sides of every kink and saturation
            for layer, spread in ((self.fc1, 1.2), (self.fc2, 0.8), (self.fc3, 1.0)):
                layer.weight.copy_(spread * torch.randn(layer.weight.shape, generator=generator))
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator))
        if form == "module":
            self.act1, self.act2 = case.module(), case.module()
        else:
            form_act = case.forms[form]
            self.act1 = self.act2 = form_act if isinstance(form_act, nn.Module) else None
            self.form_act = form_act

    def activate(self, h: Tensor, which: int) -> Tensor:
        if self.act1 is not None:
            return (self.act1 if which == 1 else self.act2)(h)
        return self.form_act(h)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc3(self.activate(self.fc2(self.activate(self.fc1(x), 1)), 2))


def differs(a: Tensor, b: Tensor, share: float = 1e-3) -> bool:
    """Whether two maps differ by more than `share` of their largest value (maps may be tiny)."""
    return bool((a - b).abs().max() > share * torch.maximum(a.abs().max(), b.abs().max()))


def apply_rule(rule: str, incoming: Tensor, pre: Tensor, derivative: Callable[[Tensor], Tensor]) -> Tensor:
    """The formulas: guided f'(x) * max(g, 0), deconvnet max(g, 0)."""
    positive = incoming.clamp(min=0)
    return derivative(pre) * positive if rule == "guided" else positive


def hand_gradient(model: TwoActivations, case: Case, x: Tensor, target: int, rule: str) -> Tensor:
    with torch.no_grad():
        h1 = model.fc1(x)
        h2 = model.fc2(model.activate(h1.clone(), 1))  # clone: in-place forms would overwrite h1
        incoming = model.fc3.weight[target].expand_as(h2)  # dL/d act(h2)
        incoming = apply_rule(rule, incoming, h2, case.derivative) @ model.fc2.weight  # dL/d act(h1)
        return apply_rule(rule, incoming, h1, case.derivative) @ model.fc1.weight


INPUTS = 1.5 * torch.randn(5, 6, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("case, form", CASE_FORMS, ids=[f"{c.name}-{f}" for c, f in CASE_FORMS])
def test_rule_equals_the_hand_computed_gradient(case, form, rule):
    model = TwoActivations(case, form).eval()
    before = model_state(model)
    result = gradient(model, INPUTS, 2, rule=rule)
    expected = hand_gradient(model, case, INPUTS, 2, rule)
    scale = expected.abs().max()
    assert scale > 0
    assert torch.allclose(result, expected, atol=2e-5 * scale, rtol=1e-4)
    # the rule differs from the plain gradient here, so the test can tell them apart
    assert differs(result, gradient(model, INPUTS, 2))
    assert model_state(model) == before  # no hooks, modes, flags or gradients left behind
    assert torch._C._len_torch_function_stack() == 0


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("case, form", CASE_FORMS, ids=[f"{c.name}-{f}" for c, f in CASE_FORMS])
def test_forward_values_are_unchanged_under_the_rule(case, form, rule):
    model = TwoActivations(case, form).eval()
    x = INPUTS.clone().requires_grad_(True)
    with relu_rule(model, rule):
        ruled = model(x)
    assert torch.equal(ruled, model(x))


def test_the_hand_derivatives_agree_with_autograd():
    """Guards the guards: each hand-written f'(x) against autograd on a detached copy."""
    # a grid that steps over the kinks (0, +-3, 6, -0.5, 0.8), where derivatives are one-sided
    x = (torch.arange(1600, dtype=torch.float64) / 100 - 7.9995)[:, None].repeat(1, WIDTH)
    for case in CASES:
        point = x.clone().requires_grad_(True)
        (autograd,) = torch.autograd.grad(case.module().double()(point).sum(), point)
        # 1e-6: float parameters such as CELU's alpha=1.3 are rounded to float32 inside torch
        assert torch.allclose(case.derivative(x), autograd, atol=1e-6), case.name


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rule_on_a_conv_map_equals_the_hand_computed_gradient(case, rule):
    generator = torch.Generator().manual_seed(3)
    conv = nn.Conv2d(3, WIDTH, 3, padding=1)
    head = nn.Linear(WIDTH * 5 * 5, 4)
    with torch.no_grad():
        conv.weight.mul_(6)
    model = nn.Sequential(conv, case.module(), nn.Flatten(), head).eval()
    x = torch.randn(2, 3, 5, 5, generator=generator)
    result = gradient(model, x, 1, rule=rule)
    with torch.no_grad():
        pre = conv(x)
        incoming = head.weight[1].view(1, *pre.shape[1:]).expand_as(pre)
        expected = F.conv_transpose2d(apply_rule(rule, incoming, pre, case.derivative), conv.weight, padding=1)
    assert torch.allclose(result, expected, atol=2e-5 * expected.abs().max(), rtol=1e-4)


def test_deconvnet_ignores_saturation_and_guided_stops_there():
    """ReLU6 saturated everywhere: guided passes nothing (f' = 0), deconvnet max(g, 0)."""
    fc, head = nn.Linear(4, 4), nn.Linear(4, 1)
    with torch.no_grad():
        fc.weight.copy_(torch.arange(16.0).view(4, 4) / 100)
        fc.bias.fill_(10.0)  # every pre-activation is above 6 for the inputs below
        head.weight.copy_(torch.tensor([[1.0, -2.0, 3.0, -4.0]]))
    model = nn.Sequential(fc, nn.ReLU6(), head).eval()
    x = torch.rand(2, 4)
    assert (fc(x) > 6).all()
    assert torch.count_nonzero(gradient(model, x, 0, rule="guided")) == 0
    expected = torch.tensor([1.0, 0.0, 3.0, 0.0]) @ fc.weight.detach()
    assert torch.allclose(gradient(model, x, 0, rule="deconvnet"), expected.expand(2, 4))
    assert expected.abs().sum() > 0


def test_sigmoid_gates_keep_their_ordinary_gradient():
    """Squeeze-excitation style gates are not rectifiers: with only gates, the rule changes nothing."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 4), nn.Hardsigmoid(), nn.Linear(4, 2)).eval()
    x = torch.randn(3, 4)
    for rule in RULES:
        assert torch.equal(gradient(model, x, 1, rule=rule), gradient(model, x, 1))


def test_unsupported_activation_in_the_feature_path_is_refused_by_name():
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Conv2d(4, 4, 3), nn.GELU()))
    model.add_module("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)))
    before = model_state(model)
    with pytest.raises(UnsupportedActivation, match=r"this model has features\.1 \(Tanh\) ") as refused:
        gradient(model, torch.randn(1, 3, 8, 8), 0, rule="guided")
    message = str(refused.value)
    assert "GELU" in message.split("this model has")[0]  # GELU is listed among the supported ones
    assert "defined for ReLU, ReLU6, LeakyReLU, PReLU, ELU" in message
    assert model_state(model) == before


@pytest.mark.parametrize("call", [torch.tanh, lambda h: h.tanh_(), F.softsign,
                                  lambda h: F.rrelu(h, training=True)])
def test_unsupported_functional_activation_is_refused_at_the_call(call):
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc2(call(self.fc1(x)))

    with pytest.raises(UnsupportedActivation, match="called inside the model's forward; the deconvnet"):
        gradient(Functional(), torch.randn(1, 4), 0, rule="deconvnet")
    assert torch._C._len_torch_function_stack() == 0


def test_rrelu_is_refused_while_training_only():
    model = nn.Sequential(nn.Linear(4, 4), nn.RReLU(), nn.Linear(4, 2))
    with pytest.raises(UnsupportedActivation, match=r"1 \(RReLU, training\)"):
        gradient(model, torch.randn(1, 4), 0, rule="guided")
    assert torch.isfinite(gradient(model.eval(), torch.randn(1, 4), 0, rule="guided")).all()


# Randomly initialised torchvision models whose activations are not ReLU.
TORCHVISION = [
    pytest.param("mobilenet_v2", {}, id="mobilenet_v2"),  # ReLU6 (F.hardtanh)
    pytest.param("mobilenet_v3_small", {}, id="mobilenet_v3_small"),  # Hardswish, ReLU, Hardsigmoid gates
    pytest.param("efficientnet_b0", {}, id="efficientnet_b0", marks=pytest.mark.slow),  # SiLU, Sigmoid gates
    pytest.param("convnext_tiny", {}, id="convnext_tiny", marks=pytest.mark.slow),  # GELU
    pytest.param("vit_b_16", {"image_size": 64}, id="vit_b_16", marks=pytest.mark.slow),  # GELU, attention
]


@pytest.mark.parametrize("name, options", TORCHVISION)
def test_torchvision_models_give_finite_maps_of_the_input_size(name, options):
    from nnvis_core.torchvision_compat import torchvision_models

    torch.manual_seed(0)
    model = getattr(torchvision_models(), name)(weights=None, **options).eval()
    with torch.no_grad():  # give the random model a signal through every branch
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith("layer_scale"):  # ConvNeXt starts its residual branches at 1e-6
                parameter.fill_(0.5)
            if parameter_name == "heads.head.weight":  # ViT starts its classifier at zero
                parameter.normal_(std=0.02)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    before = model_state(model)
    plain = gradient(model, x, 3)
    maps = {rule: gradient(model, x, 3, rule=rule) for rule in RULES}
    for result in maps.values():
        assert result.shape == x.shape
        assert torch.isfinite(result).all()
        assert result.abs().max() > 0
        assert differs(result, plain)  # the rule reached the activations
    assert differs(maps["guided"], maps["deconvnet"])
    assert model_state(model) == before
