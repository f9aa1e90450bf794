"""Images as the model sees them, streamed in batches so memory stays one batch deep.

`ImageStream` is what a dataset plugin receives: iterate it as often as needed
(each pass decodes again), ask it for just some images with `only`, and share
what one plugin derives from the whole folder (pooled features of a layer) with
the next through `shared`, so that the folder is not streamed once per plugin.
Sharing is sound because every plugin must leave the model as it found it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Collection, Iterable, Iterator

import numpy as np
import torch

from nnvis_core.contract.context import ImageItem, RunContext
from nnvis_core.images import ImageReadError, ImageRecord, load_rgb, match_label


def load_mask(ctx: RunContext, record: ImageRecord, data: bytes | None = None) -> np.ndarray | None:
    """The ground-truth mask at MASKS/relpath, preprocessed like its image, or None.
    With `data`, the mask file's bytes as read elsewhere (the Ray engine's driver)."""
    if data is None:
        if ctx.masks_dir is None or not (ctx.masks_dir / record.relpath).is_file():
            return None
    path = (ctx.masks_dir or Path("masks")) / record.relpath
    try:
        mask = ctx.model.preprocess.display(load_rgb(path, min_side=1, data=data))
    except ImageReadError:
        return None
    return mask[..., 0] > 127


def classify(ctx: RunContext, decoded: list[tuple[ImageRecord, np.ndarray, np.ndarray | None]]) -> list[ImageItem]:
    """One forward pass over decoded images (record, pixels, mask): the items plugins receive."""
    tensors = torch.stack([ctx.model.preprocess.normalize(pixels) for _, pixels, _ in decoded])
    with torch.no_grad():
        logits = ctx.module(tensors.to(ctx.device))
    probabilities = torch.softmax(logits.float(), dim=1).cpu()
    return [ImageItem(record, pixels, tensor, match_label(record.folder, ctx.class_names), probs, mask)
            for (record, pixels, mask), tensor, probs in zip(decoded, tensors, probabilities)]


def stream_items(
    records: Iterable[ImageRecord],
    ctx: RunContext,
    on_error: Callable[[ImageRecord, str], None] | None = None,
) -> Iterator[list[ImageItem]]:
    """Decode, preprocess and classify images in batches; memory stays one batch deep."""
    preprocess = ctx.model.preprocess
    batch: list[tuple[ImageRecord, np.ndarray, np.ndarray | None]] = []
    for record in records:
        try:
            pixels = preprocess.display(load_rgb(record.path) if record.image is None else record.read())
        except ImageReadError as error:
            if on_error:
                on_error(record, error.reason)
            continue
        batch.append((record, pixels, load_mask(ctx, record)))
        if len(batch) == ctx.batch_size:
            yield classify(ctx, batch)
            batch = []
    if batch:
        yield classify(ctx, batch)


BatchFunction = Callable[..., object]  # fn(ctx, items: list[ImageItem], *args) -> a small result
Mapper = Callable[[BatchFunction, tuple], Iterator[object]]


class ImageStream:
    """The readable images of a run, streamed again each time it is iterated."""

    def __init__(self, records: list[ImageRecord], ctx: RunContext, mapper: Mapper | None = None):
        self.records, self.ctx = records, ctx
        self.shared: dict = {}  # results derived from the whole folder, for the run's other plugins
        self.mapper = mapper  # the run's engine (nnvis_core.engines.local), which may compute batches elsewhere

    def map_batches(self, fn: BatchFunction, *args: object) -> Iterator[object]:
        """fn(ctx, items, *args) for each batch of readable images, in folder order, computed where
        the run's engine computes (the workers with --engine ray or --jobs N). For a pass over the
        whole folder that returns little per batch (pooled features): fn must be a module-level
        function."""
        if self.mapper is not None:
            return self.mapper(fn, args)
        return (fn(self.ctx, batch, *args) for batch in stream_items(self.records, self.ctx))

    def __iter__(self) -> Iterator[ImageItem]:
        for batch in stream_items(self.records, self.ctx):
            yield from batch

    def only(self, indices: Collection[int]) -> Iterator[ImageItem]:
        """Stream just the images whose report index is in `indices`."""
        wanted = set(indices)
        for batch in stream_items([r for r in self.records if r.index in wanted], self.ctx):
            yield from batch


def only(items: Iterable[ImageItem], indices: Collection[int]) -> Iterator[ImageItem]:
    """The items whose report index is in `indices`, decoding no other image when `items` can skip."""
    if isinstance(items, ImageStream):
        return items.only(indices)
    wanted = set(indices)
    return (item for item in items if item.record.index in wanted)


def map_batches(ctx: RunContext, items: Iterable[ImageItem], fn: BatchFunction, *args: object) -> Iterator[object]:
    """fn(ctx, batch, *args) over batches of `items`: on the run's engine for a report's
    ImageStream (see ImageStream.map_batches), here for any other collection."""
    if isinstance(items, ImageStream):
        return items.map_batches(fn, *args)
    return _batches_here(ctx, items, fn, args)


def _batches_here(ctx: RunContext, items: Iterable[ImageItem], fn: BatchFunction, args: tuple) -> Iterator[object]:
    batch: list[ImageItem] = []
    for item in items:
        batch.append(item)
        if len(batch) == ctx.batch_size:
            yield fn(ctx, batch, *args)
            batch = []
    if batch:
        yield fn(ctx, batch, *args)


def shared_store(items: Iterable[ImageItem]) -> dict | None:
    """The run's store for folder-wide results, or None when `items` is a plain collection."""
    return items.shared if isinstance(items, ImageStream) else None
