"""The rules by hand and against Zennit's, and conservation: the relevance at every layer's input sums to
the explained logit, through BatchNorm, max and average pooling, a ResNet block and a concatenation."""

from __future__ import annotations

import lrp_models as models
import pytest
import torch
from torch import nn

from nnvis_core.torchvision_compat import torchvision_models
from nnvis_plugins import lrp
from nnvis_plugins.lrp.rules import make_rule

torchvision_models()  # before zennit, which imports torchvision itself
pytest.importorskip("zennit")
from zennit import rules as zennit_rules  # noqa: E402
from zennit.attribution import Gradient  # noqa: E402
from zennit.composites import LayerMapComposite  # noqa: E402

setup_module, teardown_module = models.one_thread()

LOW, HIGH = torch.full((1, 3, 1, 1), -2.0, dtype=torch.float64), torch.full((1, 3, 1, 1), 2.5, dtype=torch.float64)
ZENNIT = {  # ours -> Zennit 0.5.1's; Zennit's WSquare squares the bias too, ours follows the paper (no bias)
    "epsilon": lambda: zennit_rules.Epsilon(epsilon=0.1), "gamma": lambda: zennit_rules.Gamma(gamma=0.25),
    "alpha2-beta1": lambda: zennit_rules.AlphaBeta(2, 1), "alpha1-beta0": lambda: zennit_rules.AlphaBeta(1, 0),
    "z-plus": zennit_rules.ZPlus, "flat": zennit_rules.Flat,
    "w-square": lambda: zennit_rules.WSquare(zero_params=["bias"]), "z-box": lambda: zennit_rules.ZBox(LOW, HIGH),
}


def linear(weights: list[float]) -> nn.Linear:
    layer = nn.Linear(len(weights), 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weights]))
    return layer


def test_epsilon_shares_the_output_by_contribution():
    relevance = make_rule("epsilon", epsilon=0.0)(linear([1.0, 3.0]), torch.tensor([[2.0, 1.0]]), torch.tensor([[5.0]]))
    assert torch.allclose(relevance, torch.tensor([[2.0, 3.0]]))  # z = 2 + 3; each input's part of the 5


def test_z_plus_keeps_only_the_contributions_that_raise_the_output():
    relevance = make_rule("z-plus")(linear([1.0, -3.0]), torch.tensor([[2.0, 1.0]]), torch.tensor([[5.0]]))
    assert torch.allclose(relevance, torch.tensor([[5.0, 0.0]]), atol=1e-5)


def test_flat_shares_equally_whatever_the_weights():
    relevance = make_rule("flat")(linear([1.0, -3.0]), torch.tensor([[2.0, 1.0]]), torch.tensor([[4.0]]))
    assert torch.allclose(relevance, torch.tensor([[2.0, 2.0]]), atol=1e-5)


@pytest.mark.parametrize("layer_type", ["conv", "linear"])
@pytest.mark.parametrize("rule", list(ZENNIT))
def test_each_rule_equals_zennits(rule, layer_type):
    torch.manual_seed(4)
    if layer_type == "conv":
        layer, x = nn.Conv2d(3, 5, 3, stride=2, padding=1), torch.randn(2, 3, 7, 7)
    else:
        layer, x = nn.Linear(12, 5), torch.randn(2, 12)
    if rule == "z-box":
        x = x.clamp(-2.0, 2.5)
    layer, x = layer.double(), x.double()
    upper = torch.randn_like(layer(x))
    ours = make_rule(rule, epsilon=0.1, gamma=0.25, bounds=(LOW, HIGH) if layer_type == "conv" else (-2.0, 2.5))(
        layer, x, upper)
    zennit_rule = ZENNIT[rule]() if not (rule == "z-box" and layer_type == "linear") else zennit_rules.ZBox(-2.0, 2.5)
    with Gradient(nn.Sequential(layer), LayerMapComposite([(type(layer), zennit_rule)])) as attributor:
        _, theirs = attributor(x.clone(), upper)
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12), float((ours - theirs).abs().max())


def test_alpha1_beta0_is_z_plus():
    torch.manual_seed(5)
    layer, x = nn.Conv2d(3, 4, 3), torch.randn(1, 3, 6, 6)
    upper = torch.randn(1, 4, 4, 4)
    assert torch.allclose(make_rule("alpha1-beta0")(layer, x, upper), make_rule("z-plus")(layer, x, upper))


@pytest.mark.parametrize("rules", ["conv=epsilon,linear=epsilon", "conv=z-plus,linear=z-plus"])
def test_relevance_is_conserved_layer_by_layer(rules):
    """Without biases, epsilon -> 0 and z-plus lose nothing: every layer's input holds the logit."""
    chain = models.chain()
    image = models.image()
    record: dict[str, torch.Tensor] = {}
    relevance = lrp.attribute(chain, image, 2, composite="epsilon-plus", rules=rules, epsilon=1e-9, record=record)
    logit = float(chain(image)[0, 2].detach())
    assert list(record) == ["9", "6", "3", "0"]  # the Linear, the average pool, the two convs (BatchNorm merged)
    for layer, values in record.items():
        assert float(values.sum()) == pytest.approx(logit, rel=1e-5), layer
    assert float(relevance.sum()) == pytest.approx(logit, rel=1e-5)


@pytest.mark.parametrize("rules", ["conv=epsilon", "conv=epsilon,first=flat"])
def test_the_residual_sum_and_the_concatenation_conserve_relevance(rules):
    """The block's sum splits relevance between shortcut and branch (a gradient would copy it to both,
    doubling it); the concatenation hands each branch its own part. (Not with z-plus: a conv before the
    sum, with no ReLU after it, may have units with no positive contribution, whose relevance z-plus drops.)"""
    residual = models.residual()
    image = models.image()
    record: dict[str, torch.Tensor] = {}
    relevance = lrp.attribute(residual, image, 1, composite="epsilon-plus", rules=rules, epsilon=1e-9, record=record)
    logit = float(residual(image)[0, 1].detach())
    branches = record["3.left.0"].sum() + record["3.right.0"].sum()
    block = record["2.conv1"].sum() + record["2.downsample.0"].sum()
    for where, total in (("branches", branches), ("block", block), ("input", relevance.sum())):
        assert float(total) == pytest.approx(logit, rel=1e-5), where


def test_the_map_does_not_depend_on_the_memory_layout():
    """nnvis makes the input contiguous: a channels-last batch (what a permuted HWC image is) gives the same map."""
    residual = models.residual()
    image = models.image()
    channels_last = image.contiguous(memory_format=torch.channels_last)
    assert torch.equal(lrp.attribute(residual, image, 0), lrp.attribute(residual, channels_last, 0))


class FunctionalTail(nn.Module):
    """The chain's last layers written in a forward, with functions: in-place ReLU, average pooling."""

    def __init__(self, chain: nn.Sequential) -> None:
        super().__init__()
        self.convs = chain[:4]
        self.head = chain[9]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.relu(self.convs(x), inplace=True)
        return self.head(torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1))


def test_functions_get_the_rules_of_their_modules():
    """F.relu_ passes relevance through and F.adaptive_avg_pool2d shares it in proportion, as the modules do."""
    chain = models.chain()
    image = models.image()
    chain[4] = nn.Identity()  # no BatchNorm: the functional copy has none
    modules = lrp.attribute(chain, image, 1, composite="epsilon-plus-flat")
    functions = lrp.attribute(FunctionalTail(chain).eval(), image, 1, composite="epsilon-plus-flat")
    assert torch.equal(modules, functions)
