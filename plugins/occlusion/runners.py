"""Two ways to get the model's output and one feature map's total for a batch of occluder
positions: whole occluded images through the model (works for any model), or the
incremental engine (same numbers, less work, for graphs it can trace).

Both expose the same small interface: `base_logits`, `base_feature` (the layer's
unoccluded activation, or None), `bytes_per_position` (for the memory budget) and
`run(index, channel) -> (logits, feature totals or None)`.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from nnvis_core.toolkit import Layout, LayoutError, captured_output, inference_bytes, leaf_output_sizes, output_layout
from nnvis_plugins.occlusion.choice import AUTO_WORK, check_reuse
from nnvis_plugins.occlusion.incremental import FULL, STATIC, IncrementalEngine, Plan, check_program, close
from nnvis_plugins.occlusion.patches import Patch, Region
from nnvis_plugins.occlusion.program import Program, Unsupported
from nnvis_plugins.occlusion.windows import OcclusionError, Windows


class LayerUnreadable(OcclusionError):
    """The feature-map layer's output cannot be read as maps (occlusion itself can still run)."""


def occluded_images(image: torch.Tensor, fill: torch.Tensor, windows: Windows, index: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W): the image with the window of each position in `index` replaced by `fill`."""
    top, left = (t.to(image.device)[index] for t in windows.corners())
    rows = torch.arange(windows.height, device=image.device)
    cols = torch.arange(windows.width, device=image.device)
    inside_rows = (rows >= top[:, None]) & (rows < top[:, None] + windows.window)
    inside_cols = (cols >= left[:, None]) & (cols < left[:, None] + windows.window)
    mask = (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]
    return torch.where(mask, fill, image)


def _channel_totals(activation: torch.Tensor, channel: int) -> torch.Tensor:
    return activation[:, channel].double().flatten(1).sum(1)


def _layout(model: nn.Module, activation: Any, image: torch.Tensor, layer_name: str) -> Layout:
    """How the layer's output reads as (N, C, h, w) feature maps: as it is, tokens on their patch
    grid (a ViT block) or channels-last (Swin); OcclusionError for anything else."""
    if not isinstance(activation, torch.Tensor) or activation.dim() not in (3, 4):
        shape = tuple(activation.shape) if isinstance(activation, torch.Tensor) else type(activation).__name__
        raise LayerUnreadable(f"layer {layer_name} gives {shape}, not (N, C, H, W) feature maps or tokens")
    try:
        return output_layout(model, activation, tuple(image.shape[-2:]))
    except LayoutError as error:
        raise LayerUnreadable(f"layer {layer_name}: {error}") from None


class BatchedRunner:
    """Occluded copies of the image through the model, a batch at a time."""

    name = "batched"

    @torch.no_grad()
    def __init__(self, model: nn.Module, image: torch.Tensor, windows: Windows, fill: torch.Tensor,
                 layer: nn.Module | None = None, layer_name: str = "") -> None:
        self.model, self.image, self.windows, self.fill, self.layer = model, image, windows, fill, layer
        with leaf_output_sizes(model) as sizes:
            self.base_logits, activation = self._forward(image)
        self.layout = None if layer is None else _layout(model, activation, image, layer_name)
        self.base_feature = None if self.layout is None else self.layout.to_map(activation)
        self.bytes_per_position = inference_bytes(sizes, image)

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.layer is None:
            return self.model(images), None
        with captured_output(self.layer) as record:
            logits = self.model(images)
        return logits, record.get("output")

    @torch.no_grad()
    def run(self, index: torch.Tensor, channel: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, activation = self._forward(occluded_images(self.image, self.fill, self.windows, index))
        totals = (None if activation is None or channel is None or self.layout is None
                  else _channel_totals(self.layout.to_map(activation), channel))
        return logits, totals


class IncrementalRunner:
    """The incremental engine, with the layer's feature map totals tapped on the way.

    max_work: raise NoReuse (an Unsupported) when one position would cost more than this
    share of a whole image's work (what `engine="auto"` passes); None runs it anyway.
    `work` is that share.
    """

    name = "incremental"
    threshold: float | None = None  # the approximate plan's projective-field threshold

    @torch.no_grad()
    def __init__(self, model: nn.Module, image: torch.Tensor, windows: Windows, fill: torch.Tensor,
                 layer: nn.Module | None = None, layer_name: str = "", full_share: float | None = None,
                 max_work: float | None = None) -> None:
        program = Program(model)
        kwargs = {} if full_share is None else {"full_share": full_share}
        self.engine = IncrementalEngine(program, image, windows, fill, threshold=self.threshold, **kwargs)
        # The model's own pass, to check the traced graph against it and to find the layer in it.
        with captured_output(layer) if layer is not None else nullcontext({}) as record:
            output = model(image)
        check_program(program, output, self.engine.base)
        if self.engine.plan.kinds[program.input] == FULL:
            raise Unsupported(f"the {windows.window}-pixel window covers most of the image")
        self.work = self.engine.work() if max_work is None else check_reuse(self.engine, max_work)
        self.base_logits = self.engine.output
        self.node = None
        self.base_feature = None
        if layer is not None:
            self.node = self._layer_node(program, record.get("output"), layer_name)
            value = self.engine.base[self.node]
            if _layout(model, value, image, layer_name).kind != "map":
                raise Unsupported(f"layer {layer_name} gives tokens or channels-last maps, which the "
                                  "incremental engine does not follow")
            self.base_feature = value
        self.bytes_per_position = image.element_size() * self._peak_elements(self.engine.plan)
        self._integral: dict[int, torch.Tensor] = {}
        self._base_totals: dict[int, float] = {}  # the unoccluded total of each tapped channel

    def _layer_node(self, program: Program, expected: torch.Tensor | None, layer_name: str) -> str:
        """The graph node whose value is the layer's output, as a forward hook saw it."""
        if expected is None:
            raise LayerUnreadable(f"layer {layer_name} was not run by the model's forward pass")
        for name in reversed(program.module_nodes(layer_name)):
            value = self.engine.base[name]
            if isinstance(value, torch.Tensor) and value.shape == expected.shape and close(value, expected):
                return name
        raise Unsupported(f"the output of layer {layer_name} is not a node of the traced graph")

    def _peak_elements(self, plan: Plan) -> int:
        """Most elements per position alive at once: patches, whole maps and the crop a window op reads."""
        base, program = self.engine.base, self.engine.program

        def size(name: str) -> int:
            kind, value = plan.kinds.get(name), base.get(name)
            if kind == STATIC or not isinstance(value, torch.Tensor):
                return 0
            if isinstance(kind, Region):
                return value.shape[1] * kind.height * kind.width
            return value[0].numel()

        live: dict[str, int] = {}
        peak = 0
        for i, step in enumerate(program.steps):
            live[step.name] = size(step.name)
            read = plan.reads.get(step.name)
            scratch = 0 if read is None else 2 * base[step.inputs[0].name].shape[1] * read.height * read.width
            peak = max(peak, sum(live.values()) + scratch)
            for node in step.inputs:
                if program.last_use.get(node.name) == i:
                    live.pop(node.name, None)
        return max(1, peak)

    def _region_sums(self, channel: int, region: Patch) -> torch.Tensor:
        """Sum of the unoccluded feature map `channel` inside each position's rectangle."""
        if channel not in self._integral:
            plane = self.base_feature[0, channel].double()
            self._integral[channel] = torch.nn.functional.pad(plane.cumsum(0).cumsum(1), (1, 0, 1, 0))
        s = self._integral[channel]
        h, w = region.values.shape[-2:]
        top, left = region.top, region.left
        return s[top + h, left + w] - s[top, left + w] - s[top + h, left] + s[top, left]

    @torch.no_grad()
    def run(self, index: torch.Tensor, channel: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        tapped: dict[str, Any] = {}
        watch = frozenset() if self.node is None or channel is None else frozenset({self.node})
        logits = self.engine.run(index.to(self.engine.image.device), lambda n, v: tapped.__setitem__(n, v), watch)
        if not watch:
            return logits, None
        value = tapped[self.node]
        if isinstance(value, Patch):
            if channel not in self._base_totals:
                self._base_totals[channel] = float(self.base_feature[0, channel].double().sum())
            totals = (self._base_totals[channel] - self._region_sums(channel, value)
                      + _channel_totals(value.values, channel))
        else:
            totals = _channel_totals(value, channel)
        return logits, totals


class ApproximateRunner(IncrementalRunner):
    """Approximate incremental inference (Nakandala et al.'s projective-field thresholding): each
    layer recomputes at most `threshold` of its side around the occluder's projection. Refuses
    (NoReuse) models where even that leaves nothing to reuse. `exact` runs the exact plan on the
    same cached activations, to measure the deviation."""

    name = "approximate"

    @torch.no_grad()
    def __init__(self, model: nn.Module, image: torch.Tensor, windows: Windows, fill: torch.Tensor,
                 layer: nn.Module | None = None, layer_name: str = "", full_share: float | None = None,
                 threshold: float = 0.5) -> None:
        if not 0 < threshold <= 1:
            raise OcclusionError(f"approximate threshold {threshold} must be above 0 and at most 1")
        self.threshold = threshold
        super().__init__(model, image, windows, fill, layer, layer_name, full_share, max_work=AUTO_WORK)
        self.exact = self.engine.replanned(None)
        self.exact_bytes_per_position = image.element_size() * self._peak_elements(self.exact.plan)

    @torch.no_grad()
    def run_exact(self, index: torch.Tensor) -> torch.Tensor:
        """The exact engine's logits for positions `index`."""
        return self.exact.run(index.to(self.engine.image.device))
