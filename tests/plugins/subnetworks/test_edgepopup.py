"""Edge-popup against its definition: top-k masks, straight-through score gradients, frozen weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnvis_plugins.subnetworks.edgepopup import (
    export,
    forward,
    frozen_copy,
    initial_scores,
    kept_count,
    prunable,
    top_k_mask,
)
from nnvis_plugins.subnetworks.training import Recipe, accuracy, train_dense, train_scores


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))


def test_the_mask_keeps_the_largest_scores_of_each_layer_and_passes_gradients_straight_through():
    scores = torch.tensor([[0.3, -0.9, 0.1], [0.05, -0.2, 0.6]], requires_grad=True)
    mask = top_k_mask(scores, 0.5)
    assert mask.tolist() == [[1, 1, 0], [0, 0, 1]]  # |0.9|, |0.6|, |0.3|: the top half of six
    upstream = torch.arange(6.0).view(2, 3)
    (mask * upstream).sum().backward()
    assert torch.equal(scores.grad, upstream * scores.detach().sign())  # identity on |score|
    assert kept_count(10, 0.04) == 1 and kept_count(10, 0.97) == 10


def test_a_scores_gradient_is_the_masked_weights_gradient_times_the_weight():
    model = tiny()
    frozen = frozen_copy(model, "kaiming_normal", seed=1)
    scores = initial_scores(frozen, seed=2)
    images, labels = torch.randn(5, 1, 6, 6), torch.tensor([0, 1, 2, 0, 1])
    frozen.eval()
    F.cross_entropy(forward(frozen, scores, 0.3, images), labels).backward()
    masked = {name: (frozen.get_parameter(name) * top_k_mask(s, 0.3)).detach().requires_grad_()
              for name, s in scores.items()}
    loss = F.cross_entropy(torch.func.functional_call(frozen, masked, (images,)), labels)
    grads = torch.autograd.grad(loss, list(masked.values()))
    for (name, score), grad in zip(scores.items(), grads):
        torch.testing.assert_close(score.grad, grad * frozen.get_parameter(name) * score.detach().sign())


def test_the_weights_are_drawn_as_stated_and_never_change():
    model = tiny()
    constant = frozen_copy(model, "signed_constant", seed=3)
    for name in prunable(constant):
        weight = constant.get_parameter(name)
        assert torch.allclose(weight.abs(), torch.full_like(weight, math.sqrt(2 / weight[0].numel())))
        assert 0.2 < float((weight > 0).float().mean()) < 0.8
    normal = frozen_copy(model, "kaiming_normal", seed=3)
    assert normal[1].weight.eq(1).all() and normal[1].bias.eq(0).all()  # BatchNorm affine at the identity
    assert torch.equal(frozen_copy(model, "loaded", seed=3)[0].weight, model[0].weight)
    before = {k: v.clone() for k, v in normal.named_parameters()}
    scores = initial_scores(normal, seed=4)
    started = {k: v.detach().clone() for k, v in scores.items()}
    images, labels = torch.randn(32, 1, 6, 6), torch.randint(0, 3, (32,))
    train_scores(normal, scores, 0.5, images, labels, Recipe(epochs=2, batch=8), seed=5)
    assert all(torch.equal(before[k], v) for k, v in normal.named_parameters())
    assert any(not torch.equal(started[k], v) for k, v in scores.items())
    assert not torch.equal(normal[1].running_mean, torch.zeros(4))  # running statistics do update
    with pytest.raises(ValueError, match="init must be one of"):
        frozen_copy(model, "xavier", seed=0)


def test_the_exported_subnetwork_computes_what_the_masked_forward_computes():
    frozen = frozen_copy(tiny(), "kaiming_normal", seed=1)
    scores = initial_scores(frozen, seed=2)
    images = torch.randn(4, 1, 6, 6)
    subnetwork = export(frozen, scores, 0.3)
    with torch.no_grad():
        torch.testing.assert_close(subnetwork(images), forward(frozen.eval(), scores, 0.3, images))
    kept = sum(int(subnetwork.get_parameter(n).ne(0).sum()) for n in prunable(subnetwork))
    assert kept == sum(kept_count(frozen.get_parameter(n).numel(), 0.3) for n in prunable(frozen))


def test_a_subnetwork_of_random_weights_learns_an_easy_task_and_the_dense_baseline_too():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (240,), generator=generator)
    images = torch.randn(240, 1, 6, 6, generator=generator) * 0.3
    images[:, 0, :2, :2] += (labels == 0).float().view(-1, 1, 1) * 2  # each class: a bright corner
    images[:, 0, -2:, -2:] += (labels == 1).float().view(-1, 1, 1) * 2
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 3))  # room to choose from
    frozen = frozen_copy(wide, "signed_constant", seed=1)
    scores = initial_scores(frozen, seed=2)
    train_scores(frozen, scores, 0.5, images, labels, Recipe(epochs=15, batch=32), seed=3)
    assert accuracy(lambda x: forward(frozen, scores, 0.5, x), images, labels) > 0.8  # chance: about 1/3
    dense, _ = train_dense(frozen, images, labels, Recipe(epochs=15, batch=32), seed=3)
    assert accuracy(dense, images, labels) > 0.8


def test_the_rank_correlation_of_a_constant_map_is_said_to_be_undefined():
    from nnvis_plugins.subnetworks.card import map_comparison

    dead = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    nn.init.zeros_(dead[1].weight)  # every gradient is zero: a constant saliency map
    live = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    gallery, table = map_comparison(dead, live, torch.randn(2, 1, 6, 6), (0.5,), (0.5,))
    assert [row[1] for row in table.rows] == ["undefined (a map is constant)"] * 2
    assert len(gallery.images) == 6
