"""The numbers behind the folder views: PCA, neighbours, agreement, grid snapping, features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nnvis_core.toolkit import PENULTIMATE, captured, feature_source
from nnvis_plugins.dataset.embedding import (
    adapted_perplexity,
    cosine_neighbours,
    knn_agreement,
    nearest_in_plane,
    neighbour_share,
    pca,
    snap_to_grid,
    tsne_embed,
)
from nnvis_plugins.dataset.features import pool


def test_pca_matches_the_covariance_eigenvectors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    scores = pca(x, dims=3)
    centred = x - x.mean(0)
    values, vectors = np.linalg.eigh(np.cov(centred.T))
    top = vectors[:, ::-1][:, :3]
    # Same subspace and variances, up to the sign of each component.
    for k in range(3):
        reference = centred @ top[:, k]
        assert abs(np.corrcoef(scores[:, k], reference)[0, 1]) == pytest.approx(1.0, abs=1e-5)
    assert np.var(scores, axis=0, ddof=1) == pytest.approx(values[::-1][:3], rel=1e-4)
    assert pca(x[:4], dims=50).shape == (4, 4)


def test_perplexity_is_lowered_for_small_folders():
    assert adapted_perplexity(40) == pytest.approx(13.0)
    assert adapted_perplexity(10_000) == 30.0
    assert adapted_perplexity(2) == 1.0


def test_cosine_neighbours_against_brute_force():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(37, 5)).astype(np.float32)
    indices, sims = cosine_neighbours(x, k=4, block_elements=8 * 37)  # blocks of 8 rows
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    full = unit @ unit.T
    np.fill_diagonal(full, -np.inf)
    expected = np.argsort(-full, axis=1)[:, :4]
    assert (indices == expected).all()
    assert sims == pytest.approx(np.take_along_axis(full, expected, axis=1), abs=1e-6)
    assert cosine_neighbours(x[:3], k=5)[0].shape == (3, 2)


def test_nearest_in_plane_and_agreement_by_hand():
    # Two tight clusters and one point of class "a" placed inside cluster "b".
    points = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10], [10.5, 10.5]], dtype=float)
    labels = ["a", "a", "a", "b", "b", "b", "a"]
    near = nearest_in_plane(points, 2)
    assert set(near[0]) == {1, 2} and near.shape == (7, 2)
    # k=2: each b has the stray a as nearest and one b: a tie, won by the nearer a; the stray
    # sees only b's. Only the first cluster agrees.
    assert knn_agreement(points, labels, k=2) == pytest.approx(3 / 7)
    # k=3: the b's outvote the stray; only the stray is wrong.
    assert knn_agreement(points, labels, k=3) == pytest.approx(6 / 7)
    share = np.mean([1, 1, 1, 0.5, 0.5, 0.5, 0])
    assert neighbour_share(points, labels, k=2) == pytest.approx(share)
    # Unlabelled points are left out on both sides.
    assert knn_agreement(points, labels[:-1] + [None], k=2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two labelled"):
        knn_agreement(points[:2], ["a", None])


def test_nearest_in_plane_never_lists_a_point_as_its_own_neighbour():
    points = np.array([[0, 0]] * 5 + [[3, 4], [3, 4]], dtype=float)  # five points on one spot
    near = nearest_in_plane(points, 2)
    assert near.shape == (7, 2)
    assert all(i not in row for i, row in enumerate(near))
    assert all(set(row) <= {0, 1, 2, 3, 4} for row in near[:5])
    assert near[5][0] == 6 and near[5][1] in range(5)  # its twin first, at distance 0
    assert nearest_in_plane(points[:1], 3).shape == (1, 0)


@pytest.mark.parametrize("count, exact_limit", [(10, 1600), (50, 1600), (50, 0)])
def test_grid_snapping_is_a_one_to_one_layout_that_keeps_order(count, exact_limit):
    rng = np.random.default_rng(count)
    points = rng.uniform(size=(count, 2))
    cells = snap_to_grid(points, exact_limit=exact_limit)
    columns = int(np.ceil(np.sqrt(count)))
    assert len(set(cells.tolist())) == count and cells.min() >= 0 and cells.max() < columns * columns
    # Left-to-right and top-to-bottom order survive: cell column and row follow x and y.
    assert np.corrcoef(cells % columns, points[:, 0])[0, 1] > 0.7
    assert np.corrcoef(cells // columns, points[:, 1])[0, 1] > 0.7


def test_tsne_separates_clusters_and_is_seeded():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 30)) * 6
    labels = np.repeat(np.arange(4), 15)
    x = (centres[labels] + rng.normal(size=(60, 30))).astype(np.float32)
    first = tsne_embed(x, seed=5, threads=1)
    assert first.shape == (60, 2) and np.isfinite(first).all()
    assert knn_agreement(first, labels.tolist(), k=5) == 1.0
    assert np.array_equal(first, tsne_embed(x, seed=5, threads=1))
    tiny = tsne_embed(x[:3], seed=0)
    assert tiny.shape == (3, 2) and np.isfinite(tiny).all()


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)))


def test_feature_layers_are_pooled_hooks_that_leave_no_trace():
    model = _Tiny().eval()
    x = torch.randn(2, 3, 8, 8)
    module, read_input = feature_source(model, PENULTIMATE)
    assert module is model.head[2] and read_input
    conv, conv_input = feature_source(model, "last_conv")
    assert conv is model.conv and not conv_input
    with captured([(module, True), (conv, False)]) as record:
        model(x)
    expected_penultimate = torch.relu(model.conv(x)).mean(dim=(2, 3))
    assert torch.allclose(pool(record[0]), expected_penultimate, atol=1e-6)
    assert torch.allclose(pool(record[1]), model.conv(x).mean(dim=(2, 3)), atol=1e-6)
    assert not model.head[2]._forward_pre_hooks and not model.conv._forward_hooks


def test_a_large_folders_grid_shows_the_image_nearest_each_cells_centre(monkeypatch):
    from nnvis_plugins.dataset import tsne

    monkeypatch.setattr(tsne, "GRID_LIMIT", 100)
    rng = np.random.default_rng(3)
    points = np.concatenate([rng.uniform(0, 1, (3000, 2)), [[0, 0], [1, 1]]])  # corners fix the span
    points[:1000, 0] *= 0.5  # the right half of the map is sparser
    gallery = tsne.grid_view(points, list(range(len(points))), [f"p{i}" for i in range(len(points))])
    assert gallery.columns == 10 and len(gallery.images) == 100
    shown = [i for i in gallery.image_ids if i is not None]
    assert len(shown) == len(set(shown)) > 90  # one image a cell, no image twice
    for cell, image_id in enumerate(gallery.image_ids):
        if image_id is None:
            continue
        row, column = divmod(cell, 10)
        members = [k for k, (x, y) in enumerate(points)
                   if min(int(x * 10), 9) == column and min(int(y * 10), 9) == row]
        centre = np.array([(column + 0.5) / 10, (row + 0.5) / 10])
        assert image_id == min(members, key=lambda k: ((points[k] - centre) ** 2).sum())
    assert "10 x 10 grid" in gallery.caption and f"of {len(points)} images" in gallery.caption
    small = tsne.grid_view(points[:50], list(range(50)), [""] * 50)
    assert sorted(i for i in small.image_ids if i is not None) == list(range(50))  # every image, up to the limit
