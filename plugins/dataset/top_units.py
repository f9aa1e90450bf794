"""Top-activating examples per unit (Zeiler & Fergus 2013, Fig. 2; Girshick et al. 2013, Fig. 4).

For each chosen channel of a layer, the images of the folder where the channel
reaches its largest value anywhere in the map, each cut to the region of the
input that drives that activation, optionally beside its deconvnet projection.
The first pass streams the images keeping only the running top examples and
per-channel statistics; the second revisits just the images that won.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from torch import nn

from nnvis_core import Gallery, Param, Plugin, Scope, hookimpl
from nnvis_core.contract.artifacts import Result
from nnvis_core.contract.context import ImageItem, RunContext
from nnvis_core.contract.stream import map_batches, only
from nnvis_core.toolkit import (
    LayerNotFound,
    LayoutError,
    as_map,
    captured,
    conv_layers,
    default_layer,
    find_layer,
    forward_until,
    middle_block,
    patch_size,
    relu_rule,
    resolve_layer_name,
    rgb_view,
)

_CHANNELS = re.compile(r"^(all|top:\d+|\d+(,\d+)*)$")


def check_channels(spec: str) -> str | None:
    if not _CHANNELS.match(spec.replace(" ", "")):
        return "expected all, top:N (the N most variable channels) or a list like 0,5,12"
    return None


def default_layers(model: nn.Module) -> list[str]:
    """A middle and the last Conv2d: mid-level parts and whole-object detectors.

    On a model with a patch embedding (ViT, Swin, ConvNeXt), whose convs are the
    stem: its middle block and its default layer (the last block).
    """
    if patch_size(model) is not None:
        return list(dict.fromkeys([middle_block(model), default_layer(model)]))
    convs = conv_layers(model)
    if not convs:
        raise LayerNotFound(f"{type(model).__name__} has no Conv2d layer")
    return list(dict.fromkeys([convs[(len(convs) - 1) // 2], convs[-1]]))


def layer_names(model: nn.Module, spec: str) -> list[str]:
    if spec == "auto":
        return default_layers(model)
    names = [resolve_layer_name(model, n) for n in (s.strip() for s in spec.split(",")) if n]
    for name in names:
        find_layer(model, name)  # LayerNotFound names near matches
    return names


@dataclass
class UnitRecord:
    """Running top examples of every channel of one layer, and per-channel spread."""

    count: int
    values: np.ndarray = field(init=False)  # (C, count) best activations, descending
    image_ids: np.ndarray = field(init=False)  # (C, count)
    positions: np.ndarray = field(init=False)  # (C, count, 2) row, column in the map
    total: np.ndarray | None = None
    total_squares: np.ndarray | None = None
    seen: int = 0

    def add(self, maps: torch.Tensor, ids: list[int]) -> None:
        """maps (B, C, H, W): keep each channel's `count` largest per-image maxima."""
        self.add_peaks(*peaks(maps), ids)

    def add_peaks(self, peak: np.ndarray, where: np.ndarray, w: int, ids: list[int]) -> None:
        """Merge one batch's per-image maxima (C, B), their flat positions (C, B) in maps `w` wide."""
        c, b = peak.shape
        if self.total is None:
            self.values = np.full((c, 0), -np.inf)
            self.image_ids = np.zeros((c, 0), dtype=np.int64)
            self.positions = np.zeros((c, 0, 2), dtype=np.int64)
            self.total, self.total_squares = np.zeros(c), np.zeros(c)
        self.total += peak.sum(1)
        self.total_squares += (peak ** 2).sum(1)
        self.seen += b
        values = np.concatenate([self.values, peak], axis=1)
        image_ids = np.concatenate([self.image_ids, np.broadcast_to(np.asarray(ids), (c, b))], axis=1)
        positions = np.concatenate([self.positions, np.stack([where // w, where % w], axis=2)], axis=1)
        keep = np.argsort(-values, axis=1, kind="stable")[:, : self.count]
        self.values = np.take_along_axis(values, keep, axis=1)
        self.image_ids = np.take_along_axis(image_ids, keep, axis=1)
        self.positions = np.take_along_axis(positions, keep[..., None], axis=1)

    def spread(self) -> np.ndarray:
        """Standard deviation over images of each channel's per-image maximum."""
        mean = self.total / self.seen
        return np.sqrt(np.maximum(self.total_squares / self.seen - mean ** 2, 0.0))


def peaks(maps: torch.Tensor) -> tuple[np.ndarray, np.ndarray, int]:
    """maps (B, C, H, W) -> each channel's per-image maximum (C, B), its flat position (C, B), and W."""
    peak, where = maps.flatten(2).max(dim=2)  # (B, C)
    return peak.double().cpu().numpy().T, where.cpu().numpy().T, maps.shape[-1]


def choose_channels(spec: str, record: UnitRecord) -> list[int]:
    """Channel indices for 'all', 'top:N' (largest spread first) or '0,5,12'."""
    channels = record.values.shape[0]
    spec = spec.replace(" ", "")
    if spec == "all":
        return list(range(channels))
    if spec.startswith("top:"):
        wanted = int(spec[4:])
        return [int(c) for c in np.argsort(-record.spread(), kind="stable")[:wanted]]
    chosen = [int(c) for c in spec.split(",")]
    bad = [c for c in chosen if c >= channels]
    if bad:
        raise ValueError(f"channels {bad} do not exist: the layer has {channels} channels (0 to {channels - 1})")
    return chosen


def spatial(model: nn.Module, name: str, output: torch.Tensor | None, input_hw) -> torch.Tensor:
    """A layer's output as (N, C, H, W) maps (tokens and channels-last read as maps), or a clear error."""
    if output is None or output.dim() not in (3, 4):
        raise LayerNotFound(f"layer {name!r} gives no feature map or token sequence")
    try:
        return as_map(model, output, (int(input_hw[0]), int(input_hw[1])))
    except LayoutError as error:
        raise LayerNotFound(f"layer {name!r}: {error}") from None


def scan(ctx: RunContext, items: Iterable[ImageItem], layers: list[str], count: int) -> dict[str, UnitRecord]:
    """First pass: stream every image once and keep each channel's top `count` examples. The forward
    passes run where the run's engine computes (Ray workers send back only the per-image maxima)."""
    records = {name: UnitRecord(count) for name in layers}
    for ids, per_layer in map_batches(ctx, items, batch_peaks, layers):
        for name, (peak, where, w) in zip(layers, per_layer):
            records[name].add_peaks(peak, where, w, ids)
    if not all(record.seen for record in records.values()):
        raise ValueError("no readable image to find top-activating examples in")
    return records


def batch_peaks(ctx: RunContext, batch: list[ImageItem], layers: list[str]) -> tuple[list[int], list[tuple]]:
    """One batch's forward pass: its report indices and, per layer, peaks() of its maps."""
    modules = [(find_layer(ctx.module, name), False) for name in layers]
    with captured(modules) as outputs, torch.no_grad():
        ctx.module(torch.stack([item.tensor for item in batch]).to(ctx.device))
        per_layer = [peaks(spatial(ctx.module, name, output, batch[0].tensor.shape[-2:]))
                     for name, output in zip(layers, outputs)]
    return [item.record.index for item in batch], per_layer


def influence_boxes(model: nn.Module, layer: nn.Module, image: torch.Tensor, units: list[tuple[int, int, int]],
                    rule: str | None = None) -> tuple[list[tuple[int, int, int, int]], torch.Tensor]:
    """For units (channel, row, column) of `layer` on one (3, H, W) image: the bounding box
    (top, left, bottom, right) of the input pixels with a nonzero gradient (the part of the
    receptive field this image actually routes through), and the gradients (U, 3, H, W).

    rule: None for the plain gradient, or a ReLU rule such as 'deconvnet' (projection).
    """
    inputs = image.unsqueeze(0).repeat(len(units), 1, 1, 1).requires_grad_(True)
    rows = torch.arange(len(units))
    channel, y, x = (torch.tensor(v) for v in zip(*units))
    with torch.enable_grad():
        if rule is None:
            maps = forward_until(model, layer, inputs)
        else:
            with relu_rule(model, rule):
                maps = forward_until(model, layer, inputs)
        maps = as_map(model, maps, tuple(image.shape[1:]))
        (gradient,) = torch.autograd.grad(maps[rows, channel, y, x].sum(), inputs)
    boxes = []
    height, width = image.shape[1:]
    for support in gradient.abs().sum(dim=1) > 0:
        hit_rows, hit_columns = torch.nonzero(support.any(dim=1)), torch.nonzero(support.any(dim=0))
        if len(hit_rows) == 0:
            boxes.append((0, 0, height, width))
        else:
            top, left = int(hit_rows.min()), int(hit_columns.min())
            boxes.append((top, left, int(hit_rows.max()) + 1, int(hit_columns.max()) + 1))
    return boxes, gradient


def square(box: tuple[int, int, int, int], height: int, width: int) -> tuple[int, int, int, int]:
    """Grow the shorter side of a box to make it square, staying inside the image."""
    top, left, bottom, right = box
    side = min(max(bottom - top, right - left), height, width)
    top = min(max(0, (top + bottom - side) // 2), height - side)
    left = min(max(0, (left + right - side) // 2), width - side)
    return top, left, top + side, left + side


def top_unit_result(ctx: RunContext, items: Iterable[ImageItem], layers: list[str], channel_spec: str,
                    count: int = 9, projection: bool = False) -> Result:
    records = scan(ctx, items, layers, count)
    chosen = {name: choose_channels(channel_spec, record) for name, record in records.items()}
    wanted: dict[int, list[tuple[str, int, int]]] = {}  # image -> (layer, channel, rank)
    for name, channels in chosen.items():
        for channel in channels:
            for rank, image_id in enumerate(records[name].image_ids[channel]):
                if np.isfinite(records[name].values[channel, rank]):
                    wanted.setdefault(int(image_id), []).append((name, channel, rank))
    patches: dict[tuple[str, int, int], np.ndarray] = {}
    projections: dict[tuple[str, int, int], np.ndarray] = {}
    for item in only(items, wanted):  # second pass: only the winning images
        for name in dict.fromkeys(n for n, _, _ in wanted.get(item.record.index, [])):
            keys = [k for k in wanted[item.record.index] if k[0] == name]
            units = [(c, *records[name].positions[c, r]) for _, c, r in keys]
            units = [(int(c), int(y), int(x)) for c, y, x in units]
            image = item.tensor.to(ctx.device)
            layer = find_layer(ctx.module, name)
            boxes, _ = influence_boxes(ctx.module, layer, image, units)
            height, width = item.pixels.shape[:2]
            if projection:
                _, projected = influence_boxes(ctx.module, layer, image, units, rule="deconvnet")
            for number, (key, box) in enumerate(zip(keys, boxes)):
                top, left, bottom, right = square(box, height, width)
                patches[key] = item.pixels[top:bottom, left:right]
                if projection:
                    projections[key] = rgb_view(projected[number, :, top:bottom, left:right])
    artifacts = []
    for name, channels in chosen.items():
        record = records[name]
        for channel in channels:
            keys = [(name, channel, rank) for rank in range(record.values.shape[1]) if (name, channel, rank) in patches]
            if not keys:
                continue
            ids = [int(record.image_ids[channel, r]) for _, _, r in keys]
            labels = [f"{record.values[channel, r]:.3g}" for _, _, r in keys]
            caption = "image regions that drive the largest activations, strongest first; label: activation"
            artifacts.append(Gallery(f"{name} channel {channel}", [patches[k] for k in keys], labels, ids,
                                     columns=3, caption=caption))
            if projection:
                artifacts.append(Gallery(f"{name} channel {channel}: deconvnet", [projections[k] for k in keys],
                                         labels, ids, columns=3, caption="deconvnet projection of each activation"))
    return Result(artifacts)


class TopUnits(Plugin):
    name = "top_units"
    title = "Top-activating examples per unit"
    description = (
        "For channels of a layer, the images of the folder that activate each channel most, cut to the region "
        "that drives the activation (Zeiler & Fergus 2013; Girshick et al. 2013): what a unit responds to, "
        "judged from real data. Optionally each beside its deconvnet projection."
    )
    scope = Scope.DATASET
    params = (
        Param("layers", str, "auto", "comma-separated layer names, last_conv, or auto (a middle and the last conv)"),
        Param("channels", str, "top:8", "all, top:N (the N channels whose peak varies most over the folder) "
              "or a list like 0,5,12", check=check_channels),
        Param("examples", int, 9, "examples per channel", minimum=1, maximum=64),
        Param("projection", bool, False, "add the deconvnet projection of each example"),
    )

    def default_layers(self, model) -> list[str]:
        return default_layers(model)  # the module's function: a middle and the last layer

    def run_dataset(self, ctx, items, params):
        layers = layer_names(ctx.module, params["layers"])
        return top_unit_result(ctx, items, layers, params["channels"], params["examples"], params["projection"])


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(TopUnits())
