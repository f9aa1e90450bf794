"""Functions written in a model's forward get their LRP rule or a refusal (calls.py), never the plain
gradient of a function nobody checked: each is compared with the rule's definition."""

from __future__ import annotations

import lrp_models as models
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnvis_core.toolkit import AttributionError
from nnvis_plugins import lrp
from nnvis_plugins.lrp import attnlrp
from nnvis_plugins.lrp.rules import STABILIZER, stabilize

setup_module, teardown_module = models.one_thread()


class Before(nn.Module):
    """`net` on a function of the input that the forward computes itself."""

    def __init__(self, net: nn.Module, function) -> None:
        super().__init__()
        self.net, self.function = net, function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.function(x))


class Mean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


@pytest.mark.parametrize("method", [lrp.attribute, attnlrp.attribute])
@pytest.mark.parametrize("function", [lambda v: v * 3.0, lambda v: 0.5 * v, lambda v: v / 4.0, lambda v: -v,
                                      torch.neg], ids=["times", "times-left", "divided", "minus", "neg"])
def test_a_scaling_or_a_negation_hands_relevance_down_unchanged(method, function):
    """z = c x under the epsilon rule: R_x = c x / (c x) R_z = R_z. The gradient would give c R_z (and
    flip every sign under a negation), as GoogLeNet's transform_input did to its input's relevance."""
    net, x = models.chain(), models.image()
    torch.testing.assert_close(method(Before(net, function), x, 0), method(net, function(x), 0))


@pytest.mark.parametrize(("method", "stabilizer"), [(lrp.attribute, STABILIZER), (attnlrp.attribute, 1e-8)])
@pytest.mark.parametrize("function", [lambda v: v + 0.3, lambda v: 0.3 + v, lambda v: v - 0.3],
                         ids=["plus", "plus-left", "minus"])
def test_a_constant_added_keeps_its_share_as_a_bias_does(method, stabilizer, function):
    """z = x + c under the epsilon rule: R_x = x R_z / z (the gradient would hand x all of R_z)."""
    net, x = models.chain(), models.image()
    z = function(x)
    expected = x * method(net, z, 0) / stabilize(z, stabilizer)
    torch.testing.assert_close(method(Before(net, function), x, 0), expected)


@pytest.mark.parametrize("method", [lrp.attribute, attnlrp.attribute])
def test_a_mean_written_in_a_forward_shares_relevance_as_average_pooling_does(method):
    """x.mean((2, 3)) is global average pooling: its rule is the pooling's, proportional to the summands
    (the gradient would give every position the same share)."""
    torch.manual_seed(4)
    convs = models.he_initialized(nn.Sequential(nn.Conv2d(3, 6, 3, bias=False), nn.ReLU(),
                                                nn.Conv2d(6, 4, 3, bias=False), nn.ReLU()))
    head = nn.Linear(4, 3, bias=False)
    pooled = nn.Sequential(convs, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).double().eval()
    written = nn.Sequential(convs, Mean(), head).double().eval()
    x = models.image()
    # rtol: AttnLRP stabilizes a mean by 1e-8, a pooling module by the house 1e-6
    torch.testing.assert_close(method(written, x, 1), method(pooled, x, 1), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(("method", "stabilizer"), [(lrp.attribute, STABILIZER), (attnlrp.attribute, 1e-8)])
def test_an_interpolation_gets_the_epsilon_rule(method, stabilizer):
    """F.interpolate is linear in x: R_x = x * J^T (R_z / z), the definition, with the net's own relevance R_z."""
    net = models.chain()
    torch.manual_seed(5)
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)

    def shrink(v: torch.Tensor) -> torch.Tensor:
        return F.interpolate(v, scale_factor=0.5, mode="bilinear", align_corners=False)
    relevance_z = method(net, shrink(x), 0)
    leaf = x.clone().requires_grad_(True)
    z = shrink(leaf)
    (pulled,) = torch.autograd.grad(z, leaf, relevance_z / stabilize(z.detach(), stabilizer))
    torch.testing.assert_close(method(Before(net, shrink), x, 0), x * pulled, rtol=1e-5, atol=1e-9)


def test_attnlrp_holds_a_normalization_constant_as_its_layernorm_rule_does():
    """F.normalize (Swin V2's and XCiT's cosine attention) divides by a norm AttnLRP holds constant: the
    identity rule, relevance handed down unchanged."""
    net, x = models.chain(), models.image()

    def unit(v: torch.Tensor) -> torch.Tensor:
        return F.normalize(v, dim=1)
    torch.testing.assert_close(attnlrp.attribute(Before(net, unit), x, 0), attnlrp.attribute(net, unit(x), 0))


UNRULED = [(torch.erf, "torch.erf"), (lambda v: v.cumsum(-1), "Tensor.cumsum"), (lambda v: v.clamp(min=0.1),
                                                                                   "Tensor.clamp")]
NORMALIZE = (lambda v: F.normalize(v, dim=1), "F.normalize")  # AttnLRP's identity rule (above); LRP has none


@pytest.mark.parametrize(("method", "word", "function", "name"),
                         [(lrp.attribute, "LRP", *call) for call in [*UNRULED, NORMALIZE]]
                         + [(attnlrp.attribute, "AttnLRP", *call) for call in UNRULED])
def test_a_function_without_a_rule_is_refused_by_name(method, word, function, name):
    with pytest.raises(AttributionError) as refused:
        method(Before(models.chain(), function), models.image(), 0)
    assert str(refused.value) == f"{word}: no rule for {name}, a function {word} has no rule for in <model> (Before)"


class _MemoryEfficientSwish(torch.autograd.Function):
    """As timm's memory-efficient activations: a forward the watch cannot see into, a backward of its own."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * s * (1 + x * (1 - s))


@pytest.mark.parametrize(("method", "word"), [(lrp.attribute, "LRP"), (attnlrp.attribute, "AttnLRP")])
def test_an_autograd_function_of_the_models_own_is_refused(method, word):
    with pytest.raises(AttributionError) as refused:
        method(Before(models.chain(), _MemoryEfficientSwish.apply), models.image(), 0)
    assert str(refused.value).startswith(f"{word}: no rule for {__name__}._MemoryEfficientSwish, an autograd function "
                                         "of the model's own")


class Head(nn.Module):
    """A Linear head, called as a module or written as F.linear with its weights (as torchvision's Swin does)."""

    def __init__(self, written: bool) -> None:
        super().__init__()
        self.fc, self.written = nn.Linear(4, 3), written

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.fc.weight, self.fc.bias) if self.written else self.fc(x)


def test_attnlrp_gives_a_linear_written_as_a_function_the_linear_rule_and_lrp_refuses_it():
    torch.manual_seed(9)
    convs = models.he_initialized(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    module, written = (nn.Sequential(convs, Head(flag)).double().eval() for flag in (False, True))
    written.load_state_dict(module.state_dict())
    x = models.image()
    for linear in ("epsilon", "gamma"):
        torch.testing.assert_close(attnlrp.attribute(written, x, 2, linear=linear),
                                   attnlrp.attribute(module, x, 2, linear=linear))
    with pytest.raises(AttributionError, match=r"^LRP: no rule for linear called as a function .* in 1 \(Head\)$"):
        lrp.attribute(written, x, 2)


class Shift(nn.Module):
    """conv, ReLU, then a constant or a branch of its own added, in place (x += c, as timm's blocks write it)
    or not, then the head."""

    def __init__(self, in_place: bool, residual: bool = False) -> None:
        super().__init__()
        torch.manual_seed(10)
        self.conv = models.he_initialized(nn.Conv2d(3, 4, 3, padding=1, bias=False))
        self.branch = models.he_initialized(nn.Conv2d(4, 4, 3, padding=1, bias=False))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3, bias=False))
        self.shift = torch.linspace(-0.5, 0.5, 4).view(1, 4, 1, 1)
        self.in_place, self.residual = in_place, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        if self.residual:  # the branch's output takes the sum, as torchvision's `out += identity`
            x, other = torch.relu(self.branch(x)), x
        else:
            other = self.shift.to(x.dtype)
        if self.in_place:
            x += other
        else:
            x = x + other
        return self.head(x)


@pytest.mark.parametrize("method", [lrp.attribute, attnlrp.attribute])
def test_a_constant_added_in_place_gets_the_rule_of_one_added_out_of_place(method):
    """x += c reaches torch as add_: the epsilon rule as for x + c, the summand it overwrites kept."""
    x = models.image()
    torch.testing.assert_close(method(Shift(True).double().eval(), x, 0), method(Shift(False).double().eval(), x, 0))


def test_attnlrp_splits_a_residual_sum_in_place_as_one_out_of_place_and_lrp_refuses_both():
    x = models.image()
    in_place, out_of_place = Shift(True, residual=True).double().eval(), Shift(False, residual=True).double().eval()
    torch.testing.assert_close(attnlrp.attribute(in_place, x, 0), attnlrp.attribute(out_of_place, x, 0))
    for model in (in_place, out_of_place):
        with pytest.raises(AttributionError, match=r"^LRP: no rule for the sum of two activations in <model> "):
            lrp.attribute(model, x, 0)


class TokensShifted(nn.Module):
    """Pixels as tokens through a Linear (whose output on tokens is a view), then a constant added in place."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = nn.Linear(3, 4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.flatten(2).transpose(1, 2).contiguous())
        tokens += 0.5
        return self.head(tokens.mean(1))


@pytest.mark.parametrize(("method", "word"), [(lrp.attribute, "LRP"), (attnlrp.attribute, "AttnLRP")])
def test_a_sum_in_place_into_a_view_autograd_cannot_rewrite_is_refused_in_one_line(method, word):
    with pytest.raises(AttributionError, match=rf"^{word}: no rule for a sum computed in place into a view autograd "
                                               r"cannot rewrite in <model> \(TokensShifted\)$"):
        method(TokensShifted().double().eval(), models.image(), 0)
