"""Nearest neighbours in feature space (Krizhevsky, Sutskever & Hinton 2012, Figure 4).

For each image, the k other images of the folder whose features are most alike
by cosine similarity, shown as a strip in that image's section. Neighbours that
share a class while differing in pixels show what the layer has abstracted.
"""

from __future__ import annotations

from nnvis_core import Gallery, Param, Plugin, Scope, hookimpl
from nnvis_core.contract.artifacts import Result
from nnvis_plugins.dataset.embedding import cosine_neighbours
from nnvis_plugins.dataset.features import LAYER_HELP, PENULTIMATE, FeatureSet, collect_features


def neighbour_result(features: FeatureSet, names: list[str], layer: str, k: int) -> Result:
    """One strip per image, and how often a neighbour shares the image's predicted / true class."""
    indices, similarities = cosine_neighbours(features.features, k)
    ids = features.image_ids
    strips = {}
    same_predicted = same_true = labelled = 0
    for row, (near, sims) in enumerate(zip(indices, similarities)):
        strips[ids[row]] = [Gallery(
            f"{len(near)} nearest in {layer}", [None] * len(near),
            [f"{names[features.predicted[j]]} {s:.2f}" for j, s in zip(near, sims)], [ids[j] for j in near],
            columns=len(near), caption="cosine similarity of features; label: predicted class",
        )] if len(near) else []
        same_predicted += sum(features.predicted[j] == features.predicted[row] for j in near)
        if features.true[row] is not None:
            labelled += len(near)
            same_true += sum(features.true[j] == features.true[row] for j in near)
    metrics = {}
    pairs = len(ids) * indices.shape[1]
    if pairs:
        metrics["neighbour_same_predicted"] = same_predicted / pairs
    if labelled:
        metrics["neighbour_same_true"] = same_true / labelled
    return Result([], metrics, image_artifacts=strips)


class NearestNeighbours(Plugin):
    name = "neighbours"
    title = "Nearest neighbours in feature space"
    description = (
        "For each image, the k images of the folder whose features in the chosen layer are most similar "
        "(cosine), as in Krizhevsky et al. 2012, Figure 4. Shown beside each image."
    )
    scope = Scope.DATASET
    params = (
        Param("layer", str, PENULTIMATE, LAYER_HELP),
        Param("k", int, 5, "neighbours per image", minimum=1, maximum=50),
    )

    def run_dataset(self, ctx, items, params):
        features = collect_features(ctx, items, params["layer"])
        return neighbour_result(features, ctx.class_names, params["layer"], params["k"])


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(NearestNeighbours())
