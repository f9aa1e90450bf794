"""AttnLRP's rules one by one, in float64, against the paper's formulas: which conserve relevance and which do not."""

from __future__ import annotations

import lrp_models as models
import torch
import torch.nn.functional as F

from nnvis_plugins.lrp.backward import passing
from nnvis_plugins.lrp.transformer_rules import Norm, attend, bilinear, layer_norm, softmax

setup_module, teardown_module = models.one_thread()


def relevance_of(inputs: list[torch.Tensor], output: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(output, inputs, upper)


def leaves(*shapes: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    return [torch.randn(*shape, dtype=torch.float64, requires_grad=True) for shape in shapes]


def test_the_softmax_rule_is_the_taylor_decomposition_at_its_input_and_keeps_a_bias_term():
    (x,) = leaves((2, 3, 5))
    upper = torch.randn(2, 3, 5, dtype=torch.float64)
    (lower,) = relevance_of([x], softmax(x, dim=-1), upper)
    s = torch.softmax(x.detach(), dim=-1)
    torch.testing.assert_close(lower, x.detach() * (upper - s * upper.sum(-1, keepdim=True)), rtol=0, atol=1e-14)
    # Not conservative: what is missing is the bias term, sum_i x_i s_i times the total.
    missing = upper.sum(-1) - lower.sum(-1)
    expected = upper.sum(-1) - (x.detach() * upper).sum(-1) + (x.detach() * s).sum(-1) * upper.sum(-1)
    torch.testing.assert_close(missing, expected, rtol=0, atol=1e-13)


def test_a_product_of_two_activations_gives_each_factor_half_by_the_epsilon_rule():
    a, b = leaves((2, 4, 3), (2, 3, 5))
    upper = torch.randn(2, 4, 5, dtype=torch.float64)
    ra, rb = relevance_of([a, b], bilinear(a, b, 1e-12), upper)
    z = (a @ b).detach()
    share = upper / (2 * z)
    torch.testing.assert_close(ra, a.detach() * (share @ b.detach().transpose(-2, -1)), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(rb, b.detach() * (a.detach().transpose(-2, -1) @ share), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ra.sum(), upper.sum() / 2, rtol=1e-9, atol=0)
    torch.testing.assert_close(rb.sum(), upper.sum() / 2, rtol=1e-9, atol=0)


def test_a_product_with_a_constant_is_the_epsilon_rule_for_the_other_factor():
    a, b = leaves((4, 3), (3, 5))
    upper = torch.randn(4, 5, dtype=torch.float64)
    (ra,) = relevance_of([a], bilinear(a, b.detach(), 1e-12), upper)
    torch.testing.assert_close(ra.sum(), upper.sum(), rtol=1e-9, atol=0)


def test_layer_norm_computes_as_the_model_and_conserves_without_bias():
    (x,) = leaves((2, 3, 8))
    torch.manual_seed(1)
    norm = Norm((8,), torch.rand(8, dtype=torch.float64) + 0.5, None, 1e-6)
    y = layer_norm(x, norm, 0.0)  # no stabilizer: the formula exactly (no output is exactly zero here)
    torch.testing.assert_close(y, F.layer_norm(x, (8,), norm.weight, None, 1e-6))
    upper = torch.randn(2, 3, 8, dtype=torch.float64)
    (lower,) = relevance_of([x], y, upper)
    torch.testing.assert_close(lower.sum(-1), upper.sum(-1), rtol=1e-9, atol=1e-12)
    # The standard deviation held: the rule distributes over (x - mean) w / std, an affine map.
    std = (x.detach().var(-1, unbiased=False, keepdim=True) + 1e-6).sqrt()
    centring = torch.eye(8, dtype=torch.float64) - 1 / 8
    matrix = (norm.weight / std).unsqueeze(-1) * centring  # M_ij, per token
    expected = x.detach() * torch.einsum("...i,...ij->...j", upper / y.detach(), matrix)
    torch.testing.assert_close(lower, expected, rtol=1e-9, atol=1e-12)


def test_the_identity_rule_passes_relevance_through_gelu():
    (x,) = leaves((3, 7))
    upper = torch.randn(3, 7, dtype=torch.float64)
    (lower,) = relevance_of([x], passing(x, F.gelu), upper)
    assert torch.equal(lower, upper)


def test_held_attention_is_conservative_and_the_full_rule_gives_values_half():
    q, k, v = leaves((1, 2, 5, 4), (1, 2, 5, 4), (1, 2, 5, 4))
    upper = torch.randn(1, 2, 5, 4, dtype=torch.float64)
    out = attend(q, k, v, held=True, epsilon=1e-12)
    rq, rk, rv = torch.autograd.grad(out, [q, k, v], upper, allow_unused=True)
    assert rq is None and rk is None  # CP-LRP: nothing through the attention weights
    torch.testing.assert_close(rv.sum(), upper.sum(), rtol=1e-9, atol=0)
    out = attend(q, k, v, epsilon=1e-12)
    rq, rk, rv = relevance_of([q, k, v], out, upper)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(rv.sum(), upper.sum() / 2, rtol=1e-9, atol=0)
    torch.testing.assert_close(rq.sum(), rk.sum(), rtol=1e-9, atol=0)  # Q K^T halves what the softmax kept
