"""The craft plugin: each class's own concepts, found in crops of its images, ranked by importance and
shown where they are (Fel et al., CVPR 2023; the method is in craft.py).

A class's images are the folder's images the model predicts it for (at most `images` of them). For
each class: a gallery, one row per concept in order of importance, of the crops that hold most of it;
a table of the concepts' importance (total Sobol index, mean and spread over the images) and share of
the crops; and, on each image used, a picture of where each concept is (each position coloured by its
strongest concept). The factorization and the Sobol designs run where the run is (the driver); the
pass that finds each image's class runs on the run's engine.
"""

from __future__ import annotations

import numpy as np
import torch

from nnvis_core import Gallery, Image, Param, Plugin, Scope, Table, hookimpl
from nnvis_core.contract.artifacts import Result
from nnvis_core.contract.stream import map_batches, only
from nnvis_core.toolkit import default_layer, find_layer, forward_until, resolve_layer_name
from nnvis_plugins.concepts import craft

# One colour per concept (concept i: PALETTE[i % len]), for the where-is-each-concept pictures.
PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
                    [0, 128, 128], [220, 190, 255], [170, 110, 40], [128, 0, 0], [128, 128, 0], [0, 0, 128]])


def batch_classes(ctx, batch) -> list[tuple[int, int]]:
    """(report index, predicted class) of each image of a batch."""
    return [(item.record.index, item.predicted) for item in batch]


def crop_pixels(pixels: np.ndarray, size: int, stride: int) -> list[np.ndarray]:
    """The crops of a displayed image (H, W, 3 uint8) in craft.crops's order (row by row)."""
    h, w = pixels.shape[:2]
    return [pixels[top:top + size, left:left + size] for top in range(0, h - size + 1, stride)
            for left in range(0, w - size + 1, stride)]


def where_picture(pixels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The image (H, W, 3) with each position tinted by its strongest concept, by how strong it is.
    values: (h, w, r) concept values on the layer's grid."""
    h, w = pixels.shape[:2]
    strongest = values.argmax(axis=2)
    strength = values.max(axis=2) / max(float(values.max()), 1e-12)
    cell = (np.arange(h) * values.shape[0] // h)[:, None], (np.arange(w) * values.shape[1] // w)[None, :]
    colour = PALETTE[strongest[cell] % len(PALETTE)]
    alpha = 0.65 * strength[cell][..., None]
    return np.clip(pixels * (1 - alpha) + colour * alpha, 0, 255).astype(np.uint8)


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
        Param("classes", str, "predicted", "classes: predicted (each class the model predicts for at least "
              "min_images images) or comma-separated class names or indices"),
        Param("concepts", int, 10, "concepts per class (the factorization's rank)", minimum=1, maximum=64),
        Param("crop", int, 0, "crop side in pixels; 0: half the model's input size", minimum=0),
        Param("images", int, 32, "at most this many images of each class are cut into crops", minimum=1),
        Param("min_images", int, 4, "classes with fewer predicted images are left out (predicted)", minimum=1),
        Param("designs", int, 32, "quasi-Monte Carlo points N of the Sobol estimate (N (concepts + 2) forward "
              "passes per image)", minimum=4, maximum=4096),
        Param("top", int, 6, "crops shown per concept", minimum=1, maximum=32),
    )

    def run_dataset(self, ctx, items, params) -> Result:
        layer = default_layer(ctx.module) if params["layer"] == "auto" else resolve_layer_name(
            ctx.module, params["layer"])
        find_layer(ctx.module, layer)
        found = [pair for batch in map_batches(ctx, items, batch_classes) for pair in batch]
        by_class: dict[int, list[int]] = {}
        for index, predicted in found:
            by_class.setdefault(predicted, []).append(index)
        classes = self._classes(ctx, params, by_class)
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
        if not artifacts:
            raise ValueError("no class has images to take concepts from (see classes and min_images)")
        return Result(artifacts, metrics, image_artifacts=image_artifacts)

    @staticmethod
    def _classes(ctx, params, by_class: dict[int, list[int]]) -> list[int]:
        if params["classes"] == "predicted":
            return sorted(k for k, indices in by_class.items() if len(indices) >= params["min_images"])
        chosen = []
        for token in (t.strip() for t in params["classes"].split(",") if t.strip()):
            if token.isdigit() and int(token) < len(ctx.class_names):
                chosen.append(int(token))
            elif token in ctx.class_names:
                chosen.append(ctx.class_names.index(token))
            else:
                raise ValueError(f"classes: {token!r} is neither a class name nor an index below "
                                 f"{len(ctx.class_names)}")
        return chosen

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
        per_image = np.stack([craft.importance(ctx.module, layer, images[n:n + 1], k, w, params["designs"])
                              for n in range(len(images))])
        importance = per_image.mean(axis=0)
        order = np.argsort(-importance, kind="stable")
        dominant = u.argmax(axis=1)
        share = np.bincount(dominant, minlength=rank) / len(u)
        pixels = [crop for item in class_items for crop in crop_pixels(item.pixels, side, stride)]
        tiles, labels = [], []
        for place, c in enumerate(order, start=1):
            best = np.argsort(-u[:, c], kind="stable")[:params["top"]]
            tiles += [pixels[i] for i in best]
            labels += [f"#{place} · {importance[c]:.2f}"] + [""] * (len(best) - 1)  # rank · importance
        gallery = Gallery(f"{name}: concepts by importance", tiles, labels, columns=params["top"],
                          caption=f"each row a concept of {name}, most important first (#rank · importance): its "
                                  f"top crops ({len(u)} crops of {side} px from {len(class_items)} images, layer "
                                  f"{layer})")
        rows = [[name, f"{place}", f"concept {c}", f"{importance[c]:.3f} ± {per_image[:, c].std():.3f}",
                 f"{100 * share[c]:.0f}%", "#" + "".join(f"{int(v):02x}" for v in PALETTE[c % len(PALETTE)])]
                for place, c in enumerate(order, start=1)]
        table = Table(f"{name}: concept importance", ["class", "rank", "concept", "importance (total Sobol, "
                      "mean ± sd over images)", "crops it dominates", "colour"], rows,
                      caption=f"Jansen's estimator on {params['designs']} Halton points per image")
        where = {}
        with torch.no_grad():
            for n, item in enumerate(class_items):
                maps = forward_until(ctx.module, layer, images[n:n + 1])[0]
                values = craft.concept_values(maps.permute(1, 2, 0).reshape(-1, maps.shape[0]).double().cpu()
                                              .numpy(), w).reshape(*maps.shape[1:], rank)
                where[item.record.index] = [Image(f"craft: {name}'s concepts here",
                                                  where_picture(item.pixels, values),
                                                  caption="each position tinted by its strongest concept "
                                                          "(colours in the class's table)")]
        figures = {f"craft:{name}:top_importance": float(importance[order[0]]),
                   f"craft:{name}:concepts": float(rank)}
        return [gallery, table], where, figures


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(Craft())
