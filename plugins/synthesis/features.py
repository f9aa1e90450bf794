"""Reading several layers' outputs in one forward pass, with the graph kept, as (B, C, h, w) maps.

Gram matrices and feature losses need the layer outputs of an image that is being
optimized, so unlike ``nnvis_core.toolkit.captured`` nothing is detached. The pass
stops after the deepest layer read: the classifier head is never run. Token
(B, N, C) and channels-last outputs become maps through ``toolkit.as_map``, so the
same losses apply to ViT, Swin and ConvNeXt layers.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from nnvis_core.toolkit import AttributionError, as_map, find_layer


class _Done(Exception):
    """Raised from a hook once every layer read has run: the rest of the pass is not needed."""


class FeatureReader:
    """``reader(images)`` -> {layer: (B, C, h, w) maps} for normalized ``images``, in the graph."""

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        self.model = model
        self.layers = list(dict.fromkeys(layers))
        self.modules = {name: find_layer(model, name) for name in self.layers}

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        record: dict[str, torch.Tensor] = {}
        with _hooks(self.modules, record):
            try:
                self.model(images)
            except _Done:
                pass
        missing = [name for name in self.layers if name not in record]
        if missing:
            raise AttributionError(f"layer {missing[0]!r} was not run by the model's forward pass")
        for name, output in record.items():
            if output.shape[0] != images.shape[0]:
                raise AttributionError(f"layer {name!r} gives {output.shape[0]} rows for {images.shape[0]} images "
                                       "(it folds something, such as attention heads, into the batch); pick another")
        hw = tuple(images.shape[-2:])
        return {name: as_map(self.model, record[name], hw) for name in self.layers}


@contextmanager
def _hooks(modules: dict[str, nn.Module], record: dict[str, torch.Tensor]) -> Iterator[None]:
    handles = []

    def keeper(name: str):
        def hook(module, args, output):
            if not isinstance(output, torch.Tensor):
                raise AttributionError(f"layer {name!r} returns {type(output).__name__}, not a tensor")
            if name in record:
                raise AttributionError(f"layer {name!r} runs more than once per forward pass; pick another")
            record[name] = output
            if len(record) == len(modules):
                raise _Done
            return output.clone()  # an in-place op downstream must not change what was kept
        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(keeper(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()
