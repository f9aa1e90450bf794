"""Occlusion sensitivity (Zeiler & Fergus 2014, section 4.2 and figure 7).

A square slides over the image; for each position the model sees the image with
the square filled (grey by default in the plugin). Per position we keep the
probability of the target class, the most probable class, and the total
activation of the feature map that is strongest in the unoccluded image. The
drop in target probability, spread over the pixels each window covers, is an
attribution map equal to Captum's `Occlusion` with the same window, stride and
baseline.

>>> from nnvis_plugins import occlusion
>>> maps = occlusion.occlusion_maps(model, image, target=3, window=32, stride=8)
>>> maps.probability            # (rows, cols) P(target) with the square at each position
>>> maps.drop_map()             # (H, W) probability drop per pixel
>>> occlusion.attribute(model, images, target=3)    # (N, 1, H, W), Captum-style
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from nnvis_core.toolkit import MEMORY_MB, LayerNotFound, chunk_size, error_line, preserved, resolve_layer
from nnvis_plugins.occlusion.choice import AUTO_WORK, NoReuse
from nnvis_plugins.occlusion.program import Unsupported
from nnvis_plugins.occlusion.runners import ApproximateRunner, BatchedRunner, IncrementalRunner, LayerUnreadable
from nnvis_plugins.occlusion.windows import (
    OcclusionError,
    Windows,
    default_stride,
    default_window,
    fill_values,
)

ENGINES = ("auto", "incremental", "batched", "approximate")
THRESHOLD = 0.5  # the approximate engine's default projective-field threshold
CHECK = 1 / 16  # the share of positions the approximate engine also runs exactly, to measure its error


@dataclass(frozen=True)
class Deviation:
    """How far the approximate engine's results are from exact inference, at the positions run both ways."""

    positions: np.ndarray  # flat (row-major) indices of those positions
    max_abs: float  # largest |approximate - exact| target-probability drop
    relative_l2: float  # L2 norm of the drop's error over that of the exact drop
    top_class_agreement: float  # share of them at which the most probable class is the same

    def describe(self, count: int) -> str:
        return (f"against exact inference at {len(self.positions)} of {count} positions: max error "
                f"{self.max_abs:.2g} in the probability drop, relative L2 error {self.relative_l2:.1%}, "
                f"same top class at {self.top_class_agreement:.0%}")


@dataclass
class OcclusionMaps:
    """Everything one pass over the occluder positions of one image gives; grids are (rows, cols)."""

    windows: Windows
    target: int
    base_probability: float  # P(target) without occluder
    base_class: int  # the most probable class without occluder
    probability: np.ndarray  # P(target) with the occluder at each position
    top_class: np.ndarray  # the most probable class at each position
    top_probability: np.ndarray  # its probability
    layer: str | None = None
    channel: int | None = None  # the feature map of `layer` whose totals `feature` holds
    base_feature: float | None = None  # its total activation without occluder
    feature: np.ndarray | None = None  # its total activation with the occluder at each position
    engine: str = "batched"  # "incremental", "batched" or "approximate"
    note: str = ""  # why the batched engine ran, when "auto" could not use the incremental one
    panel_note: str = ""  # why the feature-map panel is left out (panel_optional)
    batch_size: int = 0
    work: float | None = None  # incremental engines: one position's work as a share of a whole image's
    threshold: float | None = None  # approximate engine: its projective-field threshold
    deviation: Deviation | None = None  # approximate engine: its measured error

    def describe_engine(self) -> str:
        """Which engine ran and why, in words: 'incremental inference (49% of a whole image's work
        per position)', 'batched inference (incremental inference skipped: ...)'."""
        details = [self.note] if self.note else []
        if self.threshold is not None:
            details.append(f"projective-field threshold {self.threshold:g}")
        if self.work is not None:
            details.append(f"{self.work:.0%} of a whole image's work per position")
        if self.deviation is not None:
            details.append(self.deviation.describe(self.windows.count))
        return f"{self.engine} inference" + (f" ({'; '.join(details)})" if details else "")

    @property
    def drop(self) -> np.ndarray:
        """(rows, cols) fall in target probability caused by the occluder at each position."""
        return self.base_probability - self.probability

    def drop_map(self) -> np.ndarray:
        """(H, W) mean probability drop over the windows covering each pixel (Captum's Occlusion)."""
        return self.windows.spread(self.drop)

    def pixels(self, grid: np.ndarray) -> np.ndarray:
        """A per-position grid drawn over the image: each pixel takes the nearest window centre's value."""
        return self.windows.to_pixels(grid)


def positions_per_batch(runner, positions: int, memory_mb: float = MEMORY_MB, batch_size: int | None = None) -> int:
    """How many occluder positions go through the model at once: `batch_size`, else as many as
    `memory_mb` holds by the runner's estimate, at least one and at most all of them."""
    return min(batch_size, positions) if batch_size else chunk_size(runner.bytes_per_position, memory_mb, positions)


# Why `auto` ran the batched engine, by model and by geometry (image shape, window, stride, layer,
# full_share): the traced plan depends on nothing else, so one image's trace decides for the others.
_BATCHED_BECAUSE: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]]" = weakref.WeakKeyDictionary()


def _runner(model, image, windows, fill, layer, layer_name, engine, full_share, threshold):
    if engine == "auto":
        geometry = (tuple(image.shape), windows.window, windows.stride, layer_name, full_share)
        decided = _BATCHED_BECAUSE.setdefault(model, {})
        if geometry not in decided:
            runner, note = _chosen_runner(model, image, windows, fill, layer, layer_name, engine, full_share,
                                          threshold)
            if isinstance(runner, BatchedRunner):
                decided[geometry] = note
            return runner, note
        return BatchedRunner(model, image, windows, fill, layer, layer_name), decided[geometry]
    return _chosen_runner(model, image, windows, fill, layer, layer_name, engine, full_share, threshold)


def _chosen_runner(model, image, windows, fill, layer, layer_name, engine, full_share, threshold):
    if engine == "batched":
        return BatchedRunner(model, image, windows, fill, layer, layer_name), ""
    if engine == "approximate":
        try:
            return ApproximateRunner(model, image, windows, fill, layer, layer_name, full_share, threshold), ""
        except Unsupported as why:
            raise OcclusionError(f"approximate occlusion cannot run on {type(model).__name__}: {why}") from None
    try:
        # auto: only where the plan reuses enough work (see choice.py)
        return IncrementalRunner(model, image, windows, fill, layer, layer_name, full_share,
                                 max_work=AUTO_WORK if engine == "auto" else None), ""
    except NoReuse as why:
        return BatchedRunner(model, image, windows, fill, layer, layer_name), f"incremental inference skipped: {why}"
    except Unsupported as why:
        if engine == "incremental":
            raise OcclusionError(f"incremental occlusion cannot run on {type(model).__name__}: {why}") from None
        return BatchedRunner(model, image, windows, fill, layer, layer_name), f"incremental inference skipped: {why}"


def occlusion_maps(
    model: nn.Module,
    image: torch.Tensor,
    target: int | None = None,
    *,
    window: int | None = None,
    stride: int | None = None,
    occluder: str | float | torch.Tensor = "zero",
    layer: nn.Module | str | None = "auto",
    channel: int | None = None,
    engine: str = "auto",
    memory_mb: float = MEMORY_MB,
    batch_size: int | None = None,
    full_share: float | None = None,
    threshold: float = THRESHOLD,
    check: float = CHECK,
    panel_optional: bool = False,
) -> OcclusionMaps:
    """Slide an occluder over one image (1, C, H, W) or (C, H, W) and record the model's response.

    target: class whose probability is tracked (default: the unoccluded prediction).
    window, stride: square side and step in pixels (default: 1/7 of the shorter side, and
    the largest stride giving at least 16 positions per side).
    occluder: "zero", "mean", "blur", a number or a tensor in model space (see
    :func:`~nnvis_plugins.occlusion.windows.fill_values`; :func:`grey` gives Zeiler & Fergus's grey).
    layer: where the feature map of figure 7 (b) is read ("auto": the rectified output of
    the last conv; "last_conv", a module name or a module; None: skip it).
    channel: that layer's feature map (default: the strongest, by total activation, unoccluded).
    engine: "incremental" (exact incremental inference; an error if the model cannot be
    traced), "batched" (whole occluded images), "auto" (incremental where its plan reuses
    work, else batched with a note), "approximate" (projective-field thresholding; an
    error where it cannot reuse work).
    memory_mb: the memory one batch of positions may take; batch_size overrides it.
    full_share: the incremental engine computes a layer on whole maps once the changed
    rectangle covers this share of the map (default 0.75).
    threshold: the approximate engine recomputes at most this share of each layer's side (1: exact).
    check: the share of positions the approximate engine also runs exactly, to measure its
    error (`deviation`); at least one.
    panel_optional: when `layer` cannot be read (no such layer on the model, or an output that
    lays on no grid), leave the feature map out and say why in `panel_note` instead of failing:
    the occlusion maps themselves need no layer.
    """
    if engine not in ENGINES:
        raise OcclusionError(f"unknown engine {engine!r}: use {', '.join(ENGINES)}")
    x = image.detach()
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[0] != 1:
        raise OcclusionError(f"occlusion_maps takes one image (1, C, H, W), got {tuple(image.shape)}")
    height, width = x.shape[-2:]
    window = window or default_window(height, width)
    windows = Windows(height, width, window, stride or default_stride(height, width, window))
    fill = fill_values(occluder, x, window)
    with torch.no_grad(), preserved(model):
        module, panel_note = None, ""
        if layer is not None:
            try:
                module = resolve_layer(model, layer)
            except (LayerNotFound, ValueError) as error:
                if not panel_optional:
                    raise
                panel_note = f"no feature-map panel: {error_line(error)}"
        layer_name = None if module is None else _module_name(model, module)
        try:
            runner, note = _runner(model, x, windows, fill, module, layer_name, engine, full_share, threshold)
        except LayerUnreadable as error:
            if not panel_optional:
                raise
            panel_note = f"no feature-map panel: {error}"
            module = layer_name = None
            runner, note = _runner(model, x, windows, fill, None, None, engine, full_share, threshold)
        base_probs = _softmax(runner.base_logits)[0]
        classes = base_probs.shape[0]
        target = int(base_probs.argmax()) if target is None else int(target)
        if not 0 <= target < classes:
            raise OcclusionError(f"target {target} is not a class index of a {classes}-class model")
        if runner.base_feature is not None:
            totals = runner.base_feature[0].double().flatten(1).sum(1)
            channel = int(totals.argmax()) if channel is None else int(channel)
            if not 0 <= channel < totals.numel():
                raise OcclusionError(f"channel {channel} is not one of the {totals.numel()} of layer {layer_name}")
        else:
            channel = None
        batch = positions_per_batch(runner, windows.count, memory_mb, batch_size)
        probability, top_class, top_probability, feature = [], [], [], []
        for start in range(0, windows.count, batch):
            index = torch.arange(start, min(start + batch, windows.count))
            logits, totals = runner.run(index, channel)
            probs = _softmax(logits)
            probability.append(probs[:, target].double().cpu())
            best = probs.max(dim=1)
            top_class.append(best.indices.cpu())
            top_probability.append(best.values.double().cpu())
            if totals is not None:
                feature.append(totals.cpu())
        deviation = None
        if isinstance(runner, ApproximateRunner):
            deviation = _deviation(runner, torch.cat(probability), torch.cat(top_class), target, check,
                                   memory_mb, batch_size)
    grid = windows.shape
    return OcclusionMaps(
        windows=windows, target=target, base_probability=float(base_probs[target]),
        base_class=int(base_probs.argmax()),
        probability=torch.cat(probability).numpy().reshape(grid),
        top_class=torch.cat(top_class).numpy().reshape(grid),
        top_probability=torch.cat(top_probability).numpy().reshape(grid),
        layer=layer_name, channel=channel,
        base_feature=None if channel is None else float(runner.base_feature[0, channel].double().sum()),
        feature=torch.cat(feature).numpy().reshape(grid) if feature else None,
        engine=runner.name, note=note, panel_note=panel_note, batch_size=batch, work=getattr(runner, "work", None),
        threshold=runner.threshold if isinstance(runner, ApproximateRunner) else None, deviation=deviation,
    )


def checked_positions(count: int, share: float) -> torch.Tensor:
    """The positions the approximate engine also runs exactly: ceil(share x count) of them (at least
    one), drawn with a fixed seed so that they spread over the grid and repeat from run to run."""
    if not 0 < share <= 1:
        raise OcclusionError(f"check share {share} must be above 0 and at most 1")
    chosen = torch.randperm(count, generator=torch.Generator().manual_seed(0))[:max(1, math.ceil(share * count))]
    return chosen.sort().values


def _deviation(runner: ApproximateRunner, probability: torch.Tensor, top_class: torch.Tensor, target: int,
               check: float, memory_mb: float, batch_size: int | None) -> Deviation:
    """Run the checked positions exactly and compare the target-probability drops and top classes."""
    index = checked_positions(probability.shape[0], check)
    batch = (min(batch_size, index.numel()) if batch_size
             else chunk_size(runner.exact_bytes_per_position, memory_mb, index.numel()))
    exact = torch.cat([_softmax(runner.run_exact(index[start:start + batch]))
                       for start in range(0, index.numel(), batch)])
    base = float(_softmax(runner.base_logits)[0, target])
    exact_drop = base - exact[:, target].double().cpu()
    error = (probability[index] - exact[:, target].double().cpu()).abs()
    norm = float(exact_drop.norm())
    return Deviation(
        positions=index.numpy(), max_abs=float(error.max()),
        relative_l2=float(error.norm()) / max(norm, 1e-12),
        top_class_agreement=float((top_class[index] == exact.argmax(1).cpu()).double().mean()),
    )


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities, at least in float32 (half-precision models), in float64 for float64 models."""
    return torch.softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=1)


def _module_name(model: nn.Module, module: nn.Module) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name or type(model).__name__
    raise OcclusionError(f"{type(module).__name__} is not a submodule of {type(model).__name__}")


def attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor | None = None,
    *,
    window: int | None = None,
    stride: int | None = None,
    occluder: str | float | torch.Tensor = "zero",
    engine: str = "auto",
    memory_mb: float = MEMORY_MB,
    batch_size: int | None = None,
    threshold: float = THRESHOLD,
) -> torch.Tensor:
    """(N, 1, H, W) probability drop maps of a batch (N, C, H, W), one image at a time.

    Equal to Captum's ``Occlusion(lambda x: softmax(model(x))).attribute(inputs, target=target,
    sliding_window_shapes=(C, window, window), strides=(C, stride, stride), baselines=fill)``.
    """
    targets = [None] * inputs.shape[0] if target is None else torch.as_tensor(target).reshape(-1).tolist()
    if len(targets) == 1:
        targets = targets * inputs.shape[0]
    if len(targets) != inputs.shape[0]:
        raise OcclusionError(f"{len(targets)} targets for {inputs.shape[0]} inputs")
    maps = []
    for image, one_target in zip(inputs, targets):
        result = occlusion_maps(model, image[None], one_target, window=window, stride=stride, occluder=occluder,
                                layer=None, engine=engine, memory_mb=memory_mb, batch_size=batch_size,
                                threshold=threshold)
        maps.append(torch.from_numpy(result.drop_map()))
    dtype = inputs.dtype if inputs.dtype == torch.float64 else torch.float32
    return torch.stack(maps)[:, None].to(device=inputs.device, dtype=dtype)

