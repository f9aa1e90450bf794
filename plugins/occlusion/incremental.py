"""Exact incremental inference for occlusion (Nakandala, Kumar & Papakonstantinou, SIGMOD 2019).

An occluder changes only a square of the input. Through a convolution or pooling
the changed region grows by the op's reach and shrinks by its stride; through an
elementwise op it stays; a residual addition changes the union of its operands'
regions. So each layer is recomputed only over the rectangle the occluder can
reach, reading the unchanged context around it from the unoccluded activations
computed once, until the rectangle covers most of the map: from there on the
layer and everything after it runs on whole maps, as in ordinary inference.

The results are those of ordinary inference up to floating-point summation order.

>>> engine = IncrementalEngine(Program(model), image, windows, fill)
>>> logits = engine.run(torch.arange(engine.count))       # every position, one batch
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from nnvis_plugins.occlusion.patches import (
    Patch,
    Region,
    centred_span,
    crop,
    output_span,
    paste,
    union_span,
    window,
)
from nnvis_plugins.occlusion.program import Program, Step, Unsupported, resolve
from nnvis_plugins.occlusion.windows import Windows

STATIC = "static"  # does not depend on the input: the cached value serves every position
FULL = "full"  # computed on whole maps
FULL_SHARE = 0.75  # a rectangle covering this share of its map is computed as a whole map


@dataclass(frozen=True)
class WindowRead:
    """What a window op reads for each position: a crop of its padded input."""

    top: torch.Tensor  # (P,) in padded coordinates
    left: torch.Tensor
    height: int
    width: int
    pads: tuple[int, int, int, int]  # F.pad order: left, right, top, bottom
    pad_value: float


@dataclass
class Plan:
    """How each node is computed for every occluder position: STATIC, FULL or a Region."""

    kinds: dict[str, Any]
    reads: dict[str, WindowRead]  # window ops computed on a patch
    same_region: dict[tuple[str, str], bool]  # (elementwise node, operand): operand already has its region


def _is_map(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[0] == 1


def _spatially_constant(value: Any) -> bool:
    """A value that broadcasts the same way to every pixel (a number, a per-channel vector)."""
    if not isinstance(value, torch.Tensor):
        return True
    return value.numel() == 1 or (value.dim() >= 3 and value.shape[-2:] == (1, 1))


def make_plan(program: Program, base: dict[str, Any], windows: Windows, full_share: float = FULL_SHARE,
              threshold: float | None = None) -> Plan:
    """Decide, from the geometry alone, which rectangle of each layer every position changes.

    threshold: None for the exact plan. Otherwise the approximate plan (Nakandala et al.'s
    projective-field thresholding): a window op or a residual union keeps at most
    ceil(threshold x side) rows and columns of its changed rectangle, those centred on the
    occluder's projection, and treats the rest of its output as unchanged. 1 is exact.
    """
    kinds: dict[str, Any] = {}
    reads: dict[str, WindowRead] = {}
    same: dict[tuple[str, str], bool] = {}
    centres: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # where the occluder's projection is centred

    def small(region: Region, value: torch.Tensor) -> bool:
        return region.height * region.width < full_share * value.shape[-2] * value.shape[-1]

    def cut(region: Region, centre: tuple[torch.Tensor, torch.Tensor], value: torch.Tensor) -> Region:
        if threshold is None:
            return region
        size = value.shape[-2:]
        caps = [max(1, math.ceil(threshold * side)) for side in size]
        height, width = min(region.height, caps[0]), min(region.width, caps[1])
        top = region.top if height == region.height else centred_span(centre[0], height, size[0])
        left = region.left if width == region.width else centred_span(centre[1], width, size[1])
        return Region(top, left, height, width)

    for step in program.steps:
        name = step.name
        dynamic = [n.name for n in step.inputs if kinds.get(n.name, STATIC) != STATIC]
        if step.op == "input":
            top, left = (t.to(base[name].device) for t in windows.corners())
            k = windows.window
            region = Region(top.clamp(max=windows.height - k), left.clamp(max=windows.width - k), k, k)
            kinds[name] = region if small(region, base[name]) else FULL
            centres[name] = (top + ((windows.height - top).clamp(max=k) - 1) / 2,
                             left + ((windows.width - left).clamp(max=k) - 1) / 2)
        elif step.op == "output" or not dynamic:
            kinds[name] = STATIC if not dynamic else FULL
        elif any(not isinstance(kinds[n], Region) for n in dynamic) or not _is_map(base[name]):
            kinds[name] = FULL
        elif step.op == "window":
            kinds[name] = _plan_window(step, base, kinds, reads, dynamic, small, cut, centres)
        elif step.op == "elementwise":
            kinds[name] = _plan_elementwise(step, base, kinds, same, dynamic, small, cut, centres)
        else:
            kinds[name] = FULL
    return Plan(kinds, reads, same)


def _plan_window(step: Step, base, kinds, reads, dynamic, small, cut, centres) -> Any:
    source = step.node.args[0] if step.node.args else None
    if len(dynamic) != 1 or getattr(source, "name", None) != dynamic[0] or len(step.inputs) != 1:
        return FULL
    x, y = base[dynamic[0]], base[step.name]
    op = step.window(tuple(x.shape), tuple(y.shape))
    if op is None or not _is_map(x):
        return FULL
    region: Region = kinds[dynamic[0]]
    spans = []
    for axis in (0, 1):
        start = region.top if axis == 0 else region.left
        length = region.height if axis == 0 else region.width
        spans.append(output_span(start, length, op.kernel[axis], op.stride[axis], op.dilation[axis],
                                 op.pad_before[axis], y.shape[2 + axis]))
    (top, height), (left, width) = spans
    centre = tuple((c + op.pad_before[axis] - op.dilation[axis] * (op.kernel[axis] - 1) / 2) / op.stride[axis]
                   for axis, c in enumerate(centres[dynamic[0]]))
    out = cut(Region(top, left, height, width), centre, y)
    if not small(out, y):
        return FULL
    top, left, height, width = out.top, out.left, out.height, out.width
    # The input crop (padded coordinates) that gives exactly these output pixels.
    read_h = (height - 1) * op.stride[0] + op.dilation[0] * (op.kernel[0] - 1) + 1
    read_w = (width - 1) * op.stride[1] + op.dilation[1] * (op.kernel[1] - 1) + 1
    read_top, read_left = top * op.stride[0], left * op.stride[1]
    bottom = max(0, int((read_top + read_h).max()) - (x.shape[2] + op.pad_before[0]))
    right = max(0, int((read_left + read_w).max()) - (x.shape[3] + op.pad_before[1]))
    pads = (op.pad_before[1], right, op.pad_before[0], bottom)
    reads[step.name] = WindowRead(read_top, read_left, read_h, read_w, pads, op.pad_value)
    centres[step.name] = centre
    return out


def _plan_elementwise(step: Step, base, kinds, same, dynamic, small, cut, centres) -> Any:
    y = base[step.name]
    for node in step.inputs:
        value = base[node.name]
        if node.name in dynamic:
            if not _is_map(value) or value.shape[-2:] != y.shape[-2:]:
                return FULL
        elif not _spatially_constant(value) and not (_is_map(value) and value.shape[-2:] == y.shape[-2:]):
            return FULL
    regions = [kinds[n] for n in dynamic]
    if len(regions) == 1:
        out = regions[0]
    else:
        top, height = union_span([r.top for r in regions], [r.height for r in regions], y.shape[2])
        left, width = union_span([r.left for r in regions], [r.width for r in regions], y.shape[3])
        out = Region(top, left, height, width)
    centre = tuple(torch.stack([centres[n][axis] for n in dynamic]).mean(0) for axis in (0, 1))
    out = cut(out, centre, y)
    if not small(out, y):
        return FULL
    centres[step.name] = centre
    for n, region in zip(dynamic, regions):
        same[(step.name, n)] = region.same_as(out)
    return out


class IncrementalEngine:
    """Runs batches of occluder positions of one image through a traced model, incrementally.

    image: (1, C, H, W); fill: (1, C, H, W) values of occluded pixels. The unoccluded value
    of every node is computed once, here; `run` computes batches of positions.
    """

    @torch.no_grad()
    def __init__(self, program: Program, image: torch.Tensor, windows: Windows, fill: torch.Tensor,
                 full_share: float = FULL_SHARE, threshold: float | None = None) -> None:
        if image.dim() != 4 or image.shape[0] != 1:
            raise ValueError(f"expected one image (1, C, H, W), got {tuple(image.shape)}")
        self.program = program
        self.windows = windows
        self.full_share = full_share
        # Channels-last throughout: CPU convolutions and poolings on it are up to 10x faster.
        self.image = image.contiguous(memory_format=torch.channels_last)
        self.fill = fill.contiguous(memory_format=torch.channels_last)
        self.flops: dict[str, float] = {}  # of each node on the unoccluded image
        self.base = program.run(self.image, self.flops)
        self.plan = make_plan(program, self.base, windows, full_share, threshold)
        self._padded: dict[tuple, torch.Tensor] = {}
        self.corner_top, self.corner_left = (t.to(image.device) for t in windows.corners())

    def replanned(self, threshold: float | None) -> IncrementalEngine:
        """The same engine and cached activations with another plan (exact for None)."""
        other = copy.copy(self)
        other.plan = make_plan(self.program, self.base, self.windows, self.full_share, threshold)
        return other

    def work(self) -> float:
        """Floating-point operations one position costs under the plan (a node on a rectangle
        costs its share of the whole map's), as a share of one whole image's."""
        whole = sum(self.flops.values())
        spent = 0.0
        for name, flops in self.flops.items():
            kind = self.plan.kinds[name]
            if kind == FULL:
                spent += flops
            elif isinstance(kind, Region):
                value = self.base[name]
                spent += flops * kind.height * kind.width / (value.shape[-2] * value.shape[-1])
        return spent / whole if whole else 1.0

    @property
    def count(self) -> int:
        return self.windows.count

    @property
    def output(self) -> Any:
        """The model's output for the unoccluded image."""
        return self.base[self.program.steps[-1].name]

    def _padded_base(self, name: str, read: WindowRead) -> torch.Tensor:
        key = (name, read.pads, read.pad_value)
        if key not in self._padded:
            self._padded[key] = F.pad(self.base[name], read.pads, value=read.pad_value)
        return self._padded[key]

    def _input(self, index: torch.Tensor) -> Patch | torch.Tensor:
        """The occluded images of positions `index`: as patches, or whole when the window is large."""
        kind = self.plan.kinds[self.program.input]
        k = self.windows.window
        corner_top, corner_left = self.corner_top[index], self.corner_left[index]
        if kind == FULL:
            top = torch.zeros_like(corner_top)
            left = torch.zeros_like(corner_left)
            height, width = self.windows.height, self.windows.width
        else:
            region = kind.take(index)
            top, left, height, width = region.top, region.left, k, k
        rows = top[:, None] + torch.arange(height, device=top.device)
        cols = left[:, None] + torch.arange(width, device=top.device)
        inside_rows = (rows >= corner_top[:, None]) & (rows < corner_top[:, None] + k)
        inside_cols = (cols >= corner_left[:, None]) & (cols < corner_left[:, None] + k)
        occluded = (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]
        values = torch.where(occluded, crop(self.fill, top, left, height, width),
                             crop(self.image, top, left, height, width))
        values = values.contiguous(memory_format=torch.channels_last)
        return values if kind == FULL else Patch(top, left, values)

    @torch.no_grad()
    def run(self, index: torch.Tensor, on_value: Callable[[str, Any], None] | None = None,
            watch: frozenset[str] = frozenset()) -> Any:
        """The model output for the occluder positions `index` (B,) as one batch.

        watch: node names whose batch value (a Patch or a whole tensor) is passed to
        on_value(name, value) as soon as it is computed.
        """
        plan, base = self.plan, self.base
        values: dict[str, Any] = {}
        whole: dict[str, torch.Tensor] = {}  # patches pasted into whole maps, per batch

        def full(name: str) -> Any:
            kind = plan.kinds[name]
            if kind == STATIC:
                return base[name]
            value = values[name]
            if isinstance(value, Patch):
                if name not in whole:
                    whole[name] = paste(value, base[name])
                return whole[name]
            return value

        for i, step in enumerate(self.program.steps):
            name, kind = step.name, plan.kinds[step.name]
            if step.op == "input":
                values[name] = self._input(index)
            elif kind == STATIC:
                pass
            elif kind == FULL:
                args, kwargs = _resolve_with(step, full)
                values[name] = step.call(*args, **kwargs)
            elif step.op == "window":
                values[name] = self._window_step(step, kind.take(index), index, values)
            else:
                values[name] = self._elementwise_step(step, kind.take(index), values)
            if name in watch:
                on_value(name, values[name])
            for node in step.inputs:
                if self.program.last_use.get(node.name) == i:
                    values.pop(node.name, None)
                    whole.pop(node.name, None)
        return values[self.program.steps[-1].name]

    def _window_step(self, step: Step, region: Region, index: torch.Tensor, values: dict) -> Patch:
        source = step.inputs[0].name
        read = self.plan.reads[step.name]
        padded = self._padded_base(source, read)
        crops = window(values[source], padded, read.pads[2], read.pads[0], read.top[index], read.left[index],
                       read.height, read.width)
        op = step.window(tuple(self.base[source].shape), tuple(self.base[step.name].shape))
        return Patch(region.top, region.left, op.apply(crops.contiguous(memory_format=torch.channels_last)))

    def _elementwise_step(self, step: Step, region: Region, values: dict) -> Patch:
        def operand(name: str) -> Any:
            kind = self.plan.kinds[name]
            value = self.base[name] if kind == STATIC else values[name]
            if kind == STATIC:
                if _spatially_constant(value):
                    return value
                return crop(value, region.top, region.left, region.height, region.width)
            if self.plan.same_region[(step.name, name)]:
                return value.values
            return window(value, self.base[name], 0, 0, region.top, region.left, region.height, region.width)

        args, kwargs = _resolve_with(step, operand)
        return Patch(region.top, region.left, step.call(*args, **kwargs))


def _resolve_with(step: Step, lookup: Callable[[str], Any]) -> tuple[tuple, dict]:
    class Values(dict):
        def __missing__(self, key: str) -> Any:
            return lookup(key)

    return resolve(step.node, Values())


def check_program(program: Program, expected: Any, base: dict[str, Any]) -> None:
    """Raise Unsupported unless the traced graph's output for the image (in `base`) is the
    model's own output `expected`."""
    got = base[program.steps[-1].name]
    if not isinstance(expected, torch.Tensor) or not isinstance(got, torch.Tensor) or expected.shape != got.shape:
        raise Unsupported("the model's output is not one tensor")
    if not close(got, expected):
        raise Unsupported("the traced graph does not reproduce the model's output")


def close(got: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-4) -> bool:
    """Equal up to float32 summation order: the largest difference within `tolerance` of the largest value.

    The engine runs channels-last, where convolutions sum in another order than the model's own pass.
    """
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    return bool((got - expected).abs().max() <= tolerance * max(scale, 1e-12)) if expected.numel() else True
