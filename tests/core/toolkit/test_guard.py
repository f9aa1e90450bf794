"""The model guard (nnvis_core.toolkit.guard): `preserved` and `frozen` give the model back as they found it,
requires_grad flags, training modes, gradients and hooks included, also when the block raises."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from torch import nn

from nnvis_core.toolkit import frozen, guarded_state, model_state, preserved


def _model() -> nn.Module:
    """Training mode, one frozen layer, one gradient already kept: a state worth restoring."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(2, 3, 8, 8))
    model.train()
    model[1].eval()
    model[0].bias.requires_grad_(False)
    model[4].weight.grad = torch.ones_like(model[4].weight)
    return model


def _meddle(model: nn.Module) -> None:
    """What a careless method does: modes flipped, flags changed, hooks left, gradients computed."""
    model.eval()
    model[1].train()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    model[2].register_forward_hook(lambda module, args, output: None)
    model[0].register_forward_pre_hook(lambda module, args: None)
    model[4].register_full_backward_hook(lambda module, grad_in, grad_out: None)
    model(torch.rand(1, 3, 8, 8)).sum().backward()


@pytest.mark.parametrize("guard", [preserved, frozen])
@pytest.mark.parametrize("fails", [False, True])
def test_the_guard_restores_flags_modes_gradients_and_hooks(guard, fails: bool) -> None:
    model = _model()
    before = guarded_state(model)
    grad = model[4].weight.grad
    with pytest.raises(RuntimeError) if fails else nullcontext():
        with guard(model):
            _meddle(model)
            if fails:
                raise RuntimeError("the method failed midway")
    assert guarded_state(model) == before
    assert [m.training for m in model.modules()] == [True, True, False, True, True, True]
    assert not model[0].bias.requires_grad and model[0].weight.requires_grad
    assert model[4].weight.grad is grad and model[0].weight.grad is None
    assert not model[2]._forward_hooks and not model[0]._forward_pre_hooks and not model[4]._backward_hooks


def test_frozen_gives_an_eval_model_without_weight_gradients() -> None:
    model = _model()
    pixels = torch.rand(1, 3, 8, 8, requires_grad=True)
    with frozen(model) as inside:
        assert inside is model and not any(m.training for m in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
        model(pixels).sum().backward()
    assert pixels.grad is not None and model[0].weight.grad is None
    assert model.training and model[0].weight.requires_grad


def test_the_snapshot_sees_each_kind_of_change() -> None:
    model = _model()
    before = guarded_state(model)
    for change in (lambda: model.eval(), lambda: model[0].weight.requires_grad_(False),
                   lambda: model[2].register_forward_hook(lambda *a: None),
                   lambda: setattr(model[4].weight, "grad", None)):
        change()
        assert guarded_state(model) != before
        model = _model()
        before = guarded_state(model)


def test_the_old_name_is_kept() -> None:
    assert model_state is guarded_state

