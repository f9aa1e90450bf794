"""t-SNE map of the folder in a layer's feature space (van der Maaten & Hinton 2008).

Each image becomes a point; images the network represents alike land close
together. The report draws the points as thumbnails coloured by predicted (or
true) class, and, after Karpathy's CNN-codes pages, the same map snapped to a
grid of thumbnails.
"""

from __future__ import annotations

import math

import numpy as np

from nnvis_core import Gallery, Param, Plugin, Scatter, Scope, hookimpl
from nnvis_core.contract.artifacts import Result
from nnvis_plugins.dataset.embedding import grid_columns, knn_agreement, neighbour_share, snap_to_grid, tsne_embed
from nnvis_plugins.dataset.features import LAYER_HELP, PENULTIMATE, FeatureSet, collect_features

AGREEMENT_K = 5
BLANK_TILE = np.full((8, 8, 3), 255, dtype=np.uint8)
# Cells of the grid view. A larger folder gets a grid of this many cells, each showing the image
# nearest its centre: a 100,000-image grid was 100,000 <img> elements, and its page never loaded.
GRID_LIMIT = 2500


def class_names(ids: list[int | None], names: list[str]) -> list[str | None]:
    return [None if i is None else names[i] for i in ids]


def grid_view(points: np.ndarray, image_ids: list[int], labels: list[str]) -> Gallery:
    """The embedding snapped to a square-ish grid, one linked thumbnail per cell (every image up to
    GRID_LIMIT images, else a sample: see sampled_grid_view)."""
    if len(points) > GRID_LIMIT:
        return sampled_grid_view(points, image_ids, labels)
    columns = grid_columns(len(points))
    cells = snap_to_grid(points, columns)
    size = int(cells.max()) + 1
    tiles: list[np.ndarray | None] = [BLANK_TILE] * size
    ids: list[int | None] = [None] * size
    tile_labels = [""] * size
    for point, cell in enumerate(cells):
        tiles[cell], ids[cell], tile_labels[cell] = None, image_ids[point], labels[point]
    return Gallery("t-SNE grid", tiles, tile_labels, ids, columns=columns,
                   caption="the map above snapped to a grid: neighbours in the map are neighbours here")


def sampled_grid_view(points: np.ndarray, image_ids: list[int], labels: list[str]) -> Gallery:
    """The map cut into a square grid of at most GRID_LIMIT cells, each showing the image nearest its
    centre among the images that fall in it; cells with none stay blank."""
    side = math.isqrt(GRID_LIMIT)
    p = np.asarray(points, dtype=np.float64)
    span = np.ptp(p, axis=0)
    unit = (p - p.min(0)) / np.where(span > 0, span, 1.0)
    column_row = np.minimum((unit * side).astype(np.int64), side - 1)
    cell = column_row[:, 1] * side + column_row[:, 0]
    distance = (((column_row + 0.5) / side - unit) ** 2).sum(1)
    order = np.lexsort((distance, cell))  # by cell, nearest the centre first
    cells, first = np.unique(cell[order], return_index=True)
    tiles: list[np.ndarray | None] = [BLANK_TILE] * (side * side)
    ids: list[int | None] = [None] * (side * side)
    tile_labels = [""] * (side * side)
    for where, point in zip(cells, order[first]):
        tiles[where], ids[where], tile_labels[where] = None, image_ids[point], labels[point]
    return Gallery("t-SNE grid", tiles, tile_labels, ids, columns=side,
                   caption=f"the map above on a {side} x {side} grid: each cell shows the image nearest its "
                           f"centre ({len(cells)} of {len(p)} images); neighbours in the map are neighbours here")


def tsne_result(features: FeatureSet, names: list[str], layer: str, seed: int = 0, perplexity: float = 30.0,
                threads: int = 0) -> Result:
    """The scatter, the grid and the neighbourhood-agreement metrics for a feature set."""
    points = tsne_embed(features.features, seed=seed, perplexity=perplexity, threads=threads)
    predicted = class_names(features.predicted, names)
    true = class_names(features.true, names)
    has_truth = any(t is not None for t in true)
    metrics = {}
    if len(points) > 1:
        metrics["knn5_agreement_predicted"] = knn_agreement(points, predicted, AGREEMENT_K)
        metrics["knn5_share_predicted"] = neighbour_share(points, predicted, AGREEMENT_K)
        if sum(t is not None for t in true) > 1:
            metrics["knn5_agreement_true"] = knn_agreement(points, true, AGREEMENT_K)
            metrics["knn5_share_true"] = neighbour_share(points, true, AGREEMENT_K)
    scatter = Scatter(
        f"t-SNE of {layer}", points, labels=[str(p) for p in predicted], image_ids=list(features.image_ids),
        true_labels=[t if t is not None else "(no label)" for t in true] if has_truth else (),
        features=features.features,
        caption=f"{len(points)} images, features of {layer} ({features.features.shape[1]} dims) "
                f"reduced by PCA to 50 dims, then t-SNE; scroll to zoom, drag to pan, click a picture to go to it",
    )
    return Result([scatter, grid_view(points, features.image_ids, [str(p) for p in predicted])], metrics)


class TSNEMap(Plugin):
    name = "tsne"
    title = "t-SNE map of the folder"
    description = (
        "Every image placed on a 2-D map so that images with similar features of the chosen layer lie close "
        "(PCA to 50 dims, then t-SNE; van der Maaten & Hinton 2008), drawn as thumbnails coloured by class, "
        "and the same map snapped to a grid. Distances between far-apart clusters mean little."
    )
    scope = Scope.DATASET
    params = (
        Param("layer", str, PENULTIMATE, LAYER_HELP),
        Param("perplexity", float, 30.0, "t-SNE perplexity (effective neighbour count); lowered for small folders",
              minimum=1.0, maximum=200.0),
        Param("threads", int, 0, "CPU threads for t-SNE; 0: one below 10,000 images, every core from there",
              minimum=0),
    )

    def run_dataset(self, ctx, items, params):
        features = collect_features(ctx, items, params["layer"])
        return tsne_result(features, ctx.class_names, params["layer"], ctx.seed, params["perplexity"],
                           params["threads"])


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(TSNEMap())
