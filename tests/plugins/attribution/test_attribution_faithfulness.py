"""Deletion / insertion AUC (Petsiuk et al. 2018) and the object-mask share."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nnvis_core.toolkit import deletion_insertion, gaussian_blur, mask_share, pixel_order


class LooksAtTheCorner(nn.Module):
    """Class 0's logit is the mean brightness of the top-left 4x4 corner, times 8; class 1's is 0."""

    def forward(self, x):
        corner = x[:, :, :4, :4].mean(dim=(1, 2, 3)) * 8
        return torch.stack([corner, torch.zeros_like(corner)], dim=1)


def test_a_map_on_the_evidence_beats_the_reverse_map():
    x = -torch.ones(1, 3, 8, 8)
    x[:, :, :4, :4] = 1  # a bright corner on a dark image: blurring dims the corner
    good = torch.zeros(8, 8)
    good[:4, :4] = 1
    black = torch.full((3, 8, 8), -2.0)
    right = deletion_insertion(LooksAtTheCorner(), x, 0, good, black, steps=16, batch_size=5)
    wrong = deletion_insertion(LooksAtTheCorner(), x, 0, -good, black, steps=16, batch_size=5)
    assert right.deletion_auc < wrong.deletion_auc
    assert right.insertion_auc > wrong.insertion_auc
    # both curves start and end where they must
    p = torch.softmax(LooksAtTheCorner()(x), 1)[0, 0].item()
    p_black = torch.softmax(LooksAtTheCorner()(black[None]), 1)[0, 0].item()
    assert right.deletion[0] == pytest.approx(p) and right.deletion[-1] == pytest.approx(p_black)
    assert right.insertion[-1] == pytest.approx(p)
    assert right.fractions[0] == 0 and right.fractions[-1] == 1 and len(right.fractions) == 17
    # after a quarter of the pixels the corner is gone (deletion) or fully back (insertion)
    quarter = 4
    assert right.deletion[quarter] == pytest.approx(p_black) and right.insertion[quarter] == pytest.approx(p)


def test_batching_does_not_change_the_curves():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).double()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    saliency = torch.rand(8, 8)
    black = torch.zeros(3, 8, 8)
    one = deletion_insertion(model, x, 2, saliency, black, steps=8, batch_size=1)
    many = deletion_insertion(model, x, 2, saliency, black, steps=8, batch_size=100)
    assert np.allclose(one.deletion, many.deletion) and np.allclose(one.insertion, many.insertion)


def test_pixel_order_ranks_the_largest_first_and_keeps_raster_order_for_ties():
    order = pixel_order(torch.tensor([[0.5, 2.0], [0.5, -1.0]]))
    assert order.tolist() == [[1, 0], [2, 3]]


def test_mask_share_against_mask_area():
    saliency = np.array([[3.0, 1.0], [-5.0, 0.0]])
    mask = np.array([[True, False], [True, False]])
    result = mask_share(saliency, mask)
    assert result["mask_share"] == pytest.approx(3 / 4)  # negative values do not count
    assert result["mask_area"] == pytest.approx(0.5)
    assert result["mask_gain"] == pytest.approx(1.5)
    assert mask_share(np.zeros((2, 2)), mask)["mask_share"] == 0.0


def test_gaussian_blur_keeps_constants_and_smooths_an_impulse():
    constant = torch.full((1, 3, 9, 9), 2.5)
    assert torch.allclose(gaussian_blur(constant, 2.0), constant)
    impulse = torch.zeros(1, 1, 9, 9)
    impulse[0, 0, 4, 4] = 1
    blurred = gaussian_blur(impulse, 1.0)
    assert blurred.sum() == pytest.approx(1.0, abs=1e-5)
    assert blurred[0, 0, 4, 4] < 0.2 and blurred[0, 0, 4, 5] == pytest.approx(blurred[0, 0, 5, 4])
