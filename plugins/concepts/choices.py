"""What the concept plugins share: which layer and which classes a run's parameters pick."""

from __future__ import annotations

from collections.abc import Mapping

from nnvis_core import Param
from nnvis_core.toolkit import default_layer, find_layer, resolve_layer_name

CLASSES = Param("classes", str, "predicted", "classes: predicted (each class the model predicts for at least "
                "min_images images of the folder) or comma-separated class names or indices")


def layer_names(ctx, spec: str) -> list[str]:
    """The layers a `layer(s)` parameter names (comma-separated); auto: the layer Grad-CAM reads.
    LayerNotFound names near matches for an unknown one."""
    if spec == "auto":
        return [default_layer(ctx.module)]
    names = [resolve_layer_name(ctx.module, name.strip()) for name in spec.split(",") if name.strip()]
    for name in names:
        find_layer(ctx.module, name)
    return names


def one_layer(ctx, spec: str) -> str:
    """The one layer a `layer` parameter names (auto: as layer_names)."""
    names = layer_names(ctx, spec)
    if len(names) != 1:
        raise ValueError(f"layer: one layer, not {len(names)} ({spec})")
    return names[0]


def class_indices(ctx, spec: str, counts: Mapping[int, int], min_images: int) -> list[int]:
    """The classes a `classes` parameter picks: with predicted, each class with at least `min_images`
    of the folder's images predicted (counts: class -> images); else the named classes, in order."""
    if spec == "predicted":
        return sorted(k for k, count in counts.items() if count >= min_images)
    chosen = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        if token.isdigit() and int(token) < len(ctx.class_names):
            chosen.append(int(token))
        elif token in ctx.class_names:
            chosen.append(ctx.class_names.index(token))
        else:
            raise ValueError(f"classes: {token!r} is neither a class name nor an index below {len(ctx.class_names)}")
    return chosen
