"""The numerical side of the folder views: PCA, t-SNE, neighbours, and the thumbnail grid.

t-SNE comes from openTSNE (Policar et al. 2019) rather than scikit-learn: on
this project's 2-core machine it embedded 1,000 points in 5.4 s against
scikit-learn's 33 s (one thread each), and for large folders it offers
FFT-interpolated gradients that scale linearly with the number of points.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

PCA_DIMS = 50
TSNE_MIN_POINTS = 5  # below this, t-SNE has no neighbourhoods to keep: PCA to 2-D instead
FFT_FROM_POINTS = 10_000  # openTSNE's advice: Barnes-Hut below, FFT interpolation above


def pca(features: np.ndarray, dims: int = PCA_DIMS) -> np.ndarray:
    """(N, C) -> (N, min(dims, N, C)) principal-component scores (centred, by SVD)."""
    centred = np.asarray(features, dtype=np.float64) - np.mean(features, axis=0, dtype=np.float64)
    keep = min(dims, *centred.shape)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return (centred @ vt[:keep].T).astype(np.float32)


def adapted_perplexity(points: int, wanted: float = 30.0) -> float:
    """The wanted perplexity, lowered for small folders: each point needs about 3 x perplexity neighbours."""
    return float(max(1.0, min(wanted, (points - 1) / 3.0)))


def tsne_embed(features: np.ndarray, seed: int = 0, perplexity: float = 30.0, threads: int = 0) -> np.ndarray:
    """(N, C) features -> (N, 2) t-SNE map: PCA to 50 dimensions, then openTSNE, seeded.

    Perplexity is adapted to small folders; fewer than 5 points get their first
    two principal components instead (t-SNE is undefined there). threads: 0 picks
    one thread for Barnes-Hut (small folders: on a 2-core machine 400 points took
    1 s on one thread and 12 s on both, the threads fighting over the cores) and
    every core for the FFT method used from 10,000 points.
    """
    reduced = pca(features)
    n = len(reduced)
    if n < TSNE_MIN_POINTS:
        flat = np.zeros((n, 2), dtype=np.float32)
        flat[:, : min(2, reduced.shape[1])] = reduced[:, :2]
        return flat
    from openTSNE import TSNE

    model = TSNE(n_components=2, perplexity=adapted_perplexity(n, perplexity), initialization="pca",
                 metric="euclidean", n_jobs=threads or (-1 if n >= FFT_FROM_POINTS else 1), random_state=seed,
                 verbose=False,
                 negative_gradient_method="fft" if n >= FFT_FROM_POINTS else "bh")
    return np.asarray(model.fit(reduced), dtype=np.float32)


def cosine_neighbours(features: np.ndarray, k: int, block_elements: int = 2**21) -> tuple[np.ndarray, np.ndarray]:
    """(indices (N, k'), similarities (N, k')) of each row's k most cosine-similar other rows, best first.

    k' = min(k, N - 1). Works in blocks of rows holding at most `block_elements`
    similarities (and their partition order), so its working memory does not grow
    with N: about 25 MB at the default, for any folder.
    """
    x = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norms > 0, norms, 1.0)
    n = len(unit)
    k = min(k, n - 1)
    indices = np.zeros((n, k), dtype=np.int64)
    similarities = np.zeros((n, k), dtype=np.float32)
    if k <= 0:
        return indices, similarities
    block = max(1, block_elements // n)
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = unit[start:stop] @ unit.T
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # never one's own neighbour
        part = np.argpartition(sims, n - k, axis=1)[:, n - k:]  # the k largest, in no order
        part_sims = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_sims, axis=1, kind="stable")
        indices[start:stop] = np.take_along_axis(part, order, axis=1)
        similarities[start:stop] = np.take_along_axis(part_sims, order, axis=1)
    return indices, similarities
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = unit[start:stop] @ unit.T
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # never one's own neighbour
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        part_sims = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_sims, axis=1, kind="stable")
        indices[start:stop] = np.take_along_axis(part, order, axis=1)
        similarities[start:stop] = np.take_along_axis(part_sims, order, axis=1)
    return indices, similarities


def nearest_in_plane(points: np.ndarray, k: int) -> np.ndarray:
    """(N, k') indices of each point's k nearest other points (Euclidean), nearest first; k' = min(k, N - 1).

    By a k-d tree (scipy): N log N time and N x k memory. All pairwise distances, in blocks,
    took minutes and 1 GB blocks for the 100,000 points of a large folder's t-SNE.
    """
    from scipy.spatial import cKDTree

    p = np.asarray(points, dtype=np.float64)
    n = len(p)
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros((n, max(k, 0)), dtype=np.int64)
    _, found = cKDTree(p).query(p, k=k + 1)
    is_self = found == np.arange(n)[:, None]
    is_self[~is_self.any(axis=1), -1] = True  # k + 1 points at distance 0 left the point itself out
    return found[~is_self].reshape(n, k).astype(np.int64)


def _labelled(points: np.ndarray, labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    keep = np.array([label is not None for label in labels], dtype=bool)
    y = np.asarray([label for label in labels if label is not None], dtype=object)
    if keep.sum() < 2:
        raise ValueError("k-NN agreement needs at least two labelled points")
    return np.asarray(points, dtype=np.float64)[keep], y


def knn_agreement(points: np.ndarray, labels: Sequence, k: int = 5) -> float:
    """Leave-one-out k-NN class agreement: the fraction of points whose k nearest
    neighbours (Euclidean, in `points`) vote, by majority, for the point's own label.

    Ties go to the label of the nearer neighbour. Points labelled None are left out
    as queries and as neighbours.
    """
    p, y = _labelled(points, labels)
    agree = 0
    for query, near in enumerate(nearest_in_plane(p, k)):
        votes: dict = {}
        for j in near:  # nearest first, so the first label to reach the top count wins ties
            votes[y[j]] = votes.get(y[j], 0) + 1
        top = max(votes.values())
        winner = next(y[j] for j in near if votes[y[j]] == top)
        agree += winner == y[query]
    return agree / len(p)


def neighbour_share(points: np.ndarray, labels: Sequence, k: int = 5) -> float:
    """Mean fraction of each point's k nearest neighbours that share its label.

    Stricter than knn_agreement and capped by class sizes: with 5 images a class,
    at most 4 of 5 neighbours can share it.
    """
    p, y = _labelled(points, labels)
    near = nearest_in_plane(p, k)
    return float((y[near] == y[:, None]).mean())


def grid_columns(points: int) -> int:
    return max(1, math.ceil(math.sqrt(points)))


def snap_to_grid(points: np.ndarray, columns: int | None = None, exact_limit: int = 1600) -> np.ndarray:
    """Cell index (row * columns + column) for each 2-D point: the embedding laid on a grid.

    Up to `exact_limit` points the squared distances from points to cell centres
    are minimised exactly (a linear assignment, as in Karpathy's t-SNE grids);
    above it, points are cut into rows by y and each row is sorted by x, which is
    linear-time and keeps neighbours together well enough for browsing.
    """
    p = np.asarray(points, dtype=np.float64)
    n = len(p)
    columns = columns or grid_columns(n)
    rows = math.ceil(n / columns)
    span = np.ptp(p, axis=0)
    unit = (p - p.min(0)) / np.where(span > 0, span, 1.0)
    if n <= exact_limit:
        from scipy.optimize import linear_sum_assignment

        cells = np.arange(rows * columns)
        centres = np.stack([(cells % columns + 0.5) / columns, (cells // columns + 0.5) / rows], axis=1)
        cost = ((unit[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        point_order, cell_of = linear_sum_assignment(cost)
        result = np.empty(n, dtype=np.int64)
        result[point_order] = cell_of
        return result
    by_y = np.argsort(unit[:, 1], kind="stable")
    result = np.empty(n, dtype=np.int64)
    for row in range(rows):
        members = by_y[row * columns:(row + 1) * columns]
        members = members[np.argsort(unit[members, 0], kind="stable")]
        result[members] = row * columns + np.arange(len(members))
    return result
