"""A worker of the pooled engines (nnvis_core.engines.pool): the run rebuilt on its side.

A worker loads the model once, from the same source and weights the driver resolved
(checked by the weights' SHA-256), and then serves batch after batch: it decodes the
bytes the driver shipped, preprocesses and classifies them, runs each plugin once over
the batch's images whose result the cache does not already hold (nnvis_core.run.batches:
one batched call for a plugin that has one), and encodes the report's pictures for them
with the sink's encoder, so the driver only writes files. The same class runs as a Ray
actor (`--engine ray`) and in each process of the local engine's pool (`--jobs N`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from nnvis_core.contract.context import ImageItem
from nnvis_core.contract.stream import classify, load_mask
from nnvis_core.images import ImageReadError, ImageRecord, load_rgb
from nnvis_core.run.batches import call_batch
from nnvis_core.run.cache import model_digest
from nnvis_core.run.calls import choose_device, load_context, plugin_runs, select_plugins
from nnvis_core.run.config import ModelChoice, ReportConfig
from nnvis_core.run.plan import CallOutcome
from nnvis_core.run.sink import PictureEncoder


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to rebuild one model's run on its side."""

    config: ReportConfig  # without in-memory images: those travel batch by batch
    choice: ModelChoice
    plugins: tuple[str, ...]  # the image-scope plugins, by name
    device: str  # "cpu" or "cuda" (Ray gives a worker its GPUs as cuda:0...)
    weights_digest: str  # what the driver loaded; a worker that loads anything else stops
    encoder: PictureEncoder | None = None  # the sink's, so the driver only writes finished files
    threads: int = 0  # torch threads in the worker; 0: as given (Ray sets one per CPU it grants)


@dataclass(frozen=True)
class Shipped:
    """One image sent to a worker."""

    record: ImageRecord
    data: bytes | None  # the file's bytes; None when record.image holds the image in memory
    mask: bytes | None
    todo: tuple[str, ...]  # the plugins whose result is not cached yet


class ImageWorker:
    """A worker (a Ray actor, or a process of the local engine's pool): the model loaded once, then
    batch after batch of images."""

    def __init__(self, spec: WorkerSpec) -> None:
        from nnvis_core.allocator import keep_freed_memory
        from nnvis_core.run.registry import load_registry

        keep_freed_memory()  # as `nnvis report` does in its own process
        if spec.threads:
            torch.set_num_threads(spec.threads)

        registry = load_registry()
        runs = plugin_runs(registry, select_plugins(registry, list(spec.plugins)), spec.config.params,
                           spec.config.plugin_timeout)
        self.ctx = load_context(spec.config, spec.choice, registry, choose_device(spec.device), runs)
        found = model_digest(self.ctx.module)
        if found != spec.weights_digest:
            raise RuntimeError(f"the worker on {socket.gethostname()} loaded other weights for {self.ctx.model.name} "
                               f"than the driver (sha256 {found[:12]}, driver {spec.weights_digest[:12]}): every node "
                               f"needs the same weights file and library versions")
        self.runs = {run.plugin.name: run for run in runs}
        self.encoder = spec.encoder

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        """The Ray node this worker runs on (for the log: how far the pool spread); the host elsewhere."""
        try:
            import ray

            return ray.get_runtime_context().get_node_id()
        except Exception:  # noqa: BLE001 - not inside Ray (or no Ray at all)
            return socket.gethostname()

    def run_batch(self, batch: list[Shipped]) -> tuple[int, list[str | tuple[ImageItem, dict[str, CallOutcome]]]]:
        """For each image, its unreadable reason, or the item with the outcomes of its `todo` plugins."""
        answers: list = self._decode(batch)
        readable = [position for position, answer in enumerate(answers) if not isinstance(answer, str)]
        computed: dict[int, dict[str, CallOutcome]] = {position: {} for position in readable}
        for name, run in self.runs.items():  # each plugin once over the batch's images that need it
            positions = [position for position in readable if name in batch[position].todo]
            items = [answers[position] for position in positions]
            for position, outcome in zip(positions, call_batch(self.ctx, run, items) if items else []):
                computed[position][name] = self._encoded(answers[position], outcome)
        for position in readable:
            item = answers[position]
            answers[position] = (item, computed[position])
            if self.encoder is not None:
                item.pictures = self.encoder.encode_item(item)
        return os.getpid(), answers

    def _encoded(self, item: ImageItem, outcome: CallOutcome) -> CallOutcome:
        if self.encoder is None or not outcome.ok:
            return outcome
        return replace(outcome, pictures=self.encoder.encode_result(item, outcome))

    def map_task(self, fn: Callable[..., object], task: object) -> object:
        """fn(ctx, task): one piece of a model-scope call (RunContext.map_tasks)."""
        return fn(self.ctx, task)

    def map_batch(self, batch: list[Shipped], fn: Callable[..., object], args: tuple) -> object | None:
        """fn(ctx, items, *args) over the batch's readable images (None when none is)."""
        items = [answer for answer in self._decode(batch) if not isinstance(answer, str)]
        return fn(self.ctx, items, *args) if items else None

    def _decode(self, batch: list[Shipped]) -> list[str | ImageItem]:
        """Each image as the plugins see it (one forward pass for the batch), or why it is unreadable."""
        decoded, answers = [], []
        preprocess = self.ctx.model.preprocess
        for shipped in batch:
            record = shipped.record
            try:
                image = record.read() if shipped.data is None else load_rgb(record.path, data=shipped.data)
            except ImageReadError as error:
                answers.append(error.reason)
                continue
            mask = load_mask(self.ctx, record, shipped.mask) if shipped.mask is not None else None
            decoded.append((record, preprocess.display(image), mask))
            answers.append(None)
        items = iter(classify(self.ctx, decoded) if decoded else [])
        return [next(items) if answer is None else answer for answer in answers]
