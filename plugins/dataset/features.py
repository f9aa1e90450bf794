"""Pooled features of every image of a folder, collected while the images stream.

Only the feature vectors are kept (N x C floats per layer), never the images,
so memory grows with the folder size times the feature size, not the pixels.
A layer is named as in `model.named_modules()`; 'penultimate' means the input
of the last Linear layer (the vector the classifier reads), 'last_conv' the
last Conv2d. Spatial maps (N, C, H, W) are averaged over H and W, and so are
token sequences (patch tokens only) and channels-last maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from nnvis_core.contract.context import ImageItem, RunContext
from nnvis_core.contract.stream import map_batches, shared_store
from nnvis_core.toolkit import PENULTIMATE, LayerNotFound, LayoutError, as_map, captured, feature_source

LAYER_HELP = ("layer whose pooled output is the feature vector: penultimate (input of the last Linear), "
              "last_conv, or a named module (see nnvis layers)")


@dataclass
class FeatureSet:
    """One row per readable image, in stream order."""

    features: np.ndarray  # (N, C) float32
    image_ids: list[int]  # report image index of each row
    predicted: list[int]
    true: list[int | None]


def pool(values: torch.Tensor, model: nn.Module | None = None, input_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """(B, C) features: spatial maps averaged over positions, vectors unchanged, anything else flattened.

    With the model and input size, token sequences and channels-last maps are
    read as maps first (toolkit.as_map): a ViT token layer pools to the mean of
    its patch tokens, not a flattening of every token's channels.
    """
    if model is not None and input_hw is not None and values.dim() in (3, 4):
        try:
            values = as_map(model, values, input_hw)
        except LayoutError:
            pass  # not spatial: flattened below
    if values.dim() == 4:
        return values.mean(dim=(2, 3))
    return values.reshape(values.shape[0], -1)


def batches(items: Iterable[ImageItem], size: int) -> Iterator[list[ImageItem]]:
    batch: list[ImageItem] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def collect_features(ctx: RunContext, items: Iterable[ImageItem], layer: str = PENULTIMATE) -> FeatureSet:
    """Stream `items` once and return the pooled features of `layer` for each.

    In a report run the result is kept in the run's shared store, so the next
    dataset plugin that asks for the same layer (tsne, then neighbours) does not
    stream the folder again. Raises LayerNotFound for an unknown layer,
    ValueError when there is no image.
    """
    module, read_input = feature_source(ctx.module, layer)
    store = shared_store(items)
    key = ("pooled features", id(module), read_input)
    if store is not None and key in store:
        return store[key]
    features = _stream_features(ctx, items, layer)
    if store is not None:
        features.features.setflags(write=False)  # shared: no plugin may change another's input
        store[key] = features
    return features


def _stream_features(ctx: RunContext, items: Iterable[ImageItem], layer: str) -> FeatureSet:
    rows: list[np.ndarray] = []
    ids: list[int] = []
    predicted: list[int] = []
    true: list[int | None] = []
    # One batch at a time, where the run's engine computes (Ray workers with --engine ray): only
    # the pooled vectors come back.
    for batch_rows, batch_ids, batch_predicted, batch_true in map_batches(ctx, items, batch_features, layer):
        rows.append(batch_rows)
        ids += batch_ids
        predicted += batch_predicted
        true += batch_true
    if not rows:
        raise ValueError("no readable image to take features from")
    return FeatureSet(np.concatenate(rows).astype(np.float32, copy=False), ids, predicted, true)


def batch_features(ctx: RunContext, batch: list[ImageItem], layer: str
                   ) -> tuple[np.ndarray, list[int], list[int], list[int | None]]:
    """One batch's pooled features of `layer`, with each image's index, prediction and true class."""
    module = feature_source(ctx.module, layer)  # (module, whether its input is read)
    with captured([module]) as record, torch.no_grad():
        inputs = torch.stack([item.tensor for item in batch]).to(ctx.device)
        ctx.module(inputs)
        if record[0] is None:
            raise LayerNotFound(f"layer {layer!r} was not run by the model's forward pass")
        rows = pool(record[0], ctx.module, tuple(inputs.shape[-2:])).float().cpu().numpy()
    return (rows, [item.record.index for item in batch], [item.predicted for item in batch],
            [item.true_class for item in batch])
