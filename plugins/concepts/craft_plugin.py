"""The craft plugin: each class's own concepts, found in crops of its images, ranked by importance and
shown where they are (Fel et al., CVPR 2023; the method is in craft.py).

A class's images are the folder's images the model predicts it for (at most `images` of them). For
each class: its concepts in the report's concept atlas, most important first, each with the crops
that hold most of it (linked to their images), its importance (total Sobol index, with a 95 %
interval over the images), its share of the crops and what its direction in the layer looks like
to the model (a feature visualization, `picture_steps`); a table of the same figures; and, on each
image used, a map of its strongest concept at each position. The factorization and the Sobol
designs run where the run is (the driver); the pass that finds each image's class runs on the
run's engine.
"""

from __future__ import annotations

import numpy as np
import torch

from nnvis_core import CategoricalMap, Concept, ConceptAtlas, Param, Plugin, Scope, Table, Text, hookimpl
from nnvis_core.contract.artifacts import Result
from nnvis_core.contract.stream import map_batches, only
from nnvis_core.toolkit import forward_until
from nnvis_plugins.concepts import craft
from nnvis_plugins.concepts.choices import CLASSES, class_indices, one_layer
from nnvis_plugins.concepts.pictures import PICTURE_STEPS, direction_pictures


def batch_classes(ctx, batch) -> list[tuple[int, int]]:
    """(report index, predicted class) of each image of a batch."""
    return [(item.record.index, item.predicted) for item in batch]


def crop_pixels(pixels: np.ndarray, size: int, stride: int) -> list[np.ndarray]:
    """The crops of a displayed image (H, W, 3 uint8) in craft.crops's order (row by row)."""
    h, w = pixels.shape[:2]
    return [pixels[top:top + size, left:left + size] for top in range(0, h - size + 1, stride)
            for left in range(0, w - size + 1, stride)]


def strongest_concepts(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) int: the strongest concept at each position of the layer's grid (values (h, w, r)), each
    grid cell spread over the pixels it covers."""
    strongest = values.argmax(axis=2)
    rows = np.arange(size[0]) * values.shape[0] // size[0]
    columns = np.arange(size[1]) * values.shape[1] // size[1]
    return strongest[rows[:, None], columns[None, :]].astype(np.int64)


class Craft(Plugin):
    name = "craft"
    title = "CRAFT: each class's concepts"
    description = (
        "Fel et al. (CVPR 2023): crops of a class's images, their activations at a layer factorized into "
        "non-negative concepts (NMF); each concept's importance for the class is its total Sobol index "
        "(how much of the logit's variance it explains when the concepts of the class's images are masked at "
        "random), and each image shows where its concepts are. Per class: concepts as rows of their top "
        "crops, a table of importance, a map per image."
    )
    scope = Scope.DATASET
    params = (
        Param("layer", str, "auto", "a layer with non-negative maps (after a ReLU; see nnvis layers); auto: "
              "the layer Grad-CAM reads"),
        CLASSES,
        Param("concepts", int, 10, "concepts per class (the factorization's rank)", minimum=1, maximum=64),
        Param("crop", int, 0, "crop side in pixels; 0: half the model's input size", minimum=0),
        Param("images", int, 32, "at most this many images of each class are cut into crops", minimum=1),
        Param("min_images", int, 4, "classes with fewer predicted images are left out (predicted)", minimum=1),
        Param("designs", int, 32, "quasi-Monte Carlo points N of the Sobol estimate (N (concepts + 2) forward "
              "passes per image)", minimum=4, maximum=4096),
        Param("top", int, 6, "crops shown per concept", minimum=1, maximum=32),
        PICTURE_STEPS,
    )

    def run_dataset(self, ctx, items, params) -> Result:
        layer = one_layer(ctx, params["layer"])
        found = [pair for batch in map_batches(ctx, items, batch_classes) for pair in batch]
        by_class: dict[int, list[int]] = {}
        for index, predicted in found:
            by_class.setdefault(predicted, []).append(index)
        classes = class_indices(ctx, params["classes"], {k: len(v) for k, v in by_class.items()},
                                params["min_images"])
        artifacts, image_artifacts, metrics = [], {}, {}
        for k in classes:
            chosen = by_class.get(k, [])[:params["images"]]
            if not chosen:
                continue
            class_items = sorted(only(items, set(chosen)), key=lambda item: item.record.index)
            shown, where, figures = self._one_class(ctx, params, layer, k, class_items)
            artifacts += shown
            image_artifacts.update(where)
            metrics.update(figures)
        if not artifacts:  # a folder too small for any class: said on the card, not a failure
            counts = ", ".join(f"{ctx.class_names[k]} {len(v)}" for k, v in sorted(by_class.items()))
            return Result([Text("craft: no class to explain", f"no class has at least min_images="
                                f"{params['min_images']} images predicted (predicted: {counts}); lower min_images "
                                "or add images")])
        return Result(artifacts, metrics, image_artifacts=image_artifacts)

    def _one_class(self, ctx, params, layer, k, class_items):
        name = ctx.class_names[k]
        images = torch.stack([item.tensor for item in class_items]).to(ctx.device)
        size = images.shape[-1]
        side = params["crop"] or max(1, size // 2)
        if side > min(images.shape[-2:]):
            raise ValueError(f"crop={side}: larger than the model's input ({size} px)")
        stride = max(1, int(side * 0.8))
        pieces = craft.crops(images, side, stride)
        activations = craft.crop_activations(ctx.module, pieces, layer, size, ctx.batch_size)
        rank = min(params["concepts"], *activations.shape)
        u, w = craft.factorize(activations, rank, seed=ctx.seed)
        per_image = craft.image_indices(ctx.module, layer, images, k, w, params["designs"])
        importance = per_image.mean(axis=0)
        order = np.argsort(-importance, kind="stable")
        dominant = u.argmax(axis=1)
        share = np.bincount(dominant, minlength=rank) / len(u)
        per_crop = len(pieces) // len(class_items)  # craft.crops cuts the same grid from every image
        pixels = [crop for item in class_items for crop in crop_pixels(item.pixels, side, stride)]
        spread = per_image.std(axis=0) * 1.96 / np.sqrt(len(per_image))  # a 95 % interval of the mean
        drawn = direction_pictures(ctx, layer, w[order], params["picture_steps"])
        rows = []
        for place, c in enumerate(order, start=1):
            best = np.argsort(-u[:, c], kind="stable")[:params["top"]]
            rows.append(Concept(f"concept {c}", [pixels[i] for i in best],
                                [class_items[i // per_crop].record.index for i in best],
                                value=float(importance[c]), low=float(importance[c] - spread[c]),
                                high=float(importance[c] + spread[c]), share=float(share[c]),
                                picture=drawn[place - 1]))
        atlas = ConceptAtlas(f"{name}: concepts by importance", name, rows,
                             value_label="importance (total Sobol index, 95 % interval over images)",
                             share_label="crops it dominates",
                             caption=f"{len(u)} crops of {side} px from {len(class_items)} images, layer {layer}; "
                                     f"Jansen's estimator on {params['designs']} Halton points per image")
        rows = [[name, f"{place}", f"concept {c}", f"{importance[c]:.3f} ± {per_image[:, c].std():.3f}",
                 f"{100 * share[c]:.0f}%"] for place, c in enumerate(order, start=1)]
        table = Table(f"{name}: concept importance", ["class", "rank", "concept", "importance (total Sobol, "
                      "mean ± sd over images)", "crops it dominates"], rows,
                      caption=f"Jansen's estimator on {params['designs']} Halton points per image")
        where = {}
        with torch.no_grad():
            for n, item in enumerate(class_items):
                maps = forward_until(ctx.module, layer, images[n:n + 1])[0]
                values = craft.concept_values(maps.permute(1, 2, 0).reshape(-1, maps.shape[0]).double().cpu()
                                              .numpy(), w).reshape(*maps.shape[1:], rank)
                where[item.record.index] = [CategoricalMap(
                    f"craft: {name}'s concepts here", strongest_concepts(values, item.pixels.shape[:2]),
                    {c: f"concept {c}" for c in range(rank)},
                    caption="the strongest of the class's concepts at each position of the layer")]
        figures = {f"craft:{name}:top_importance": float(importance[order[0]]),
                   f"craft:{name}:concepts": float(rank)}
        return [atlas, table], where, figures


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(Craft())
