"""What a plugin receives: the model with its helpers, and one image at a time."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch

from nnvis_core.contract.targets import resolve_target
from nnvis_core.images import ImageRecord
from nnvis_core.models.layers import resolve_layer
from nnvis_core.models.loaded import LoadedModel


@dataclass
class ImageItem:
    """One readable image as the model sees it, with the model's prediction."""

    record: ImageRecord
    pixels: np.ndarray  # (H, W, 3) uint8: the resized, cropped input before normalization
    tensor: torch.Tensor  # (3, H, W) float, normalized, on the CPU
    true_class: int | None
    probabilities: torch.Tensor  # (num_classes,) softmax of the model output
    mask: np.ndarray | None = None  # (H, W) bool ground-truth object mask, when --masks gives one
    pictures: dict[str, bytes] | None = None  # the sink's files for it, encoded where it was made (a Ray worker)

    @property
    def predicted(self) -> int:
        return int(self.probabilities.argmax())


@dataclass
class RunContext:
    """The model and run settings, shared by every plugin call of a run."""

    model: LoadedModel
    device: torch.device
    seed: int = 0
    batch_size: int = 16
    masks_dir: Path | None = None  # ground-truth masks, same relative paths as the images
    # Every registered plugin by name (nnvis_core.Plugin instances; typed loosely so that the
    # contract module, which names RunContext in its signatures, is not imported back).
    plugins: Mapping[str, Any] = field(default_factory=dict)
    # The plugins this run computes, by name: what a plugin that reads the others' results (the
    # sanity check's `methods=run`) can count on being in the report.
    chosen: tuple[str, ...] = ()
    # The trust metrics (nnvis_core.metrics) each attribution map is scored with, by name, and what scores
    # them: score_map(names, **MapInput fields) -> ({metric: value}, {metric: why it failed}), given by the
    # run (the toolkit, which calls it, sits below the metrics, which use the toolkit).
    metrics: tuple[str, ...] = ()
    score_map: Callable[..., tuple[dict[str, float], dict[str, str]]] | None = field(
        default=None, repr=False, compare=False)
    # Where map_tasks computes: None = here; the run's engine sets it (Ray: spread over its workers).
    task_mapper: Callable[[Callable[..., Any], list], Iterator[Any]] | None = field(
        default=None, repr=False, compare=False)
    concepts_dir: Path | None = None  # concept images, one subfolder per concept (--concepts)

    def map_tasks(self, fn: Callable[..., Any], tasks: Iterable[Any]) -> Iterator[Any]:
        """fn(ctx, task) for each task, the results in order: the independent pieces of a model-scope
        call (one picture per channel, say), spread over the workers with --engine ray or --jobs N,
        else computed here one after another. `fn` must be a module-level function and the tasks
        picklable; a worker's ctx has the same model, device and seed."""
        if self.task_mapper is None:
            return (fn(self, task) for task in tasks)
        return self.task_mapper(fn, list(tasks))

    @property
    def module(self) -> torch.nn.Module:
        return self.model.module

    @property
    def class_names(self) -> list[str]:
        return self.model.class_names

    def input(self, item: ImageItem) -> torch.Tensor:
        """The image as a (1, 3, H, W) batch on the model's device."""
        return item.tensor.unsqueeze(0).to(self.device)

    def target(self, item: ImageItem, spec: str = "predicted") -> int:
        """Class index for a target spec: predicted, true, an index or a class name."""
        return resolve_target(spec, item.predicted, item.true_class, self.class_names)

    def layer(self, name: str) -> torch.nn.Module:
        """A submodule by its named_modules() name, or 'auto' / 'last_conv' (see nnvis_core.toolkit.layers)."""
        return resolve_layer(self.module, name)

    def seed_for(self, item: ImageItem | None, plugin_name: str) -> int:
        """A seed that depends on the run seed, the image and the plugin, not the order of work."""
        key = f"{self.seed}:{plugin_name}:{item.record.relpath if item else ''}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")
