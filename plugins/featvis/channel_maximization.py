"""Neuron, channel and layer maximization: what a unit inside the network responds to most.

>>> from nnvis_plugins.featvis.channel_maximization import maximize_units
>>> made = maximize_units(model, "features.10", [0, 5, 9], Settings(size=64), mean=MEAN, std=STD)
>>> made.images.shape, made.scores          # (3, 64, 64, 3), the channel's mean activation on each

Units on a rectified layer (a ReLU output) are optimized at the layer before
the ReLU: a channel that is off on the starting image gives no gradient
through the ReLU and would never turn on (see layers.preactivation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from nnvis_core import Gallery, Param, Plugin, Result, Scope, hookimpl
from nnvis_core.toolkit import preactivation, rectified_output
from nnvis_core.toolkit.featvis import objectives as obj
from nnvis_core.toolkit.featvis.render import Settings, evaluate, layer_outputs, render
from nnvis_plugins.featvis.cache import VisualizationCache, cached_units, default_cache_dir, model_fingerprint
from nnvis_plugins.featvis.layers import LayerError, sample_layers, spread
from nnvis_plugins.featvis.options import describe, optimization_params, plain_settings, settings_from

UNITS = ("channel", "neuron", "layer")


@dataclass
class UnitImages:
    layer: str  # the layer that was optimized
    units: list[int]  # one per image (-1 for a whole-layer objective)
    images: np.ndarray  # (N, H, W, 3) float in [0, 1]
    scores: np.ndarray  # (N,) the objective, without penalties or diversity, on each final image


def unit_objective(kind: str, layer: str, units: int | Sequence[int]) -> obj.Objective:
    if kind == "channel":
        return obj.channel(layer, units)
    if kind == "neuron":
        return obj.neuron(layer, units)
    if kind == "layer":
        return obj.layer_activation(layer)
    raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {kind!r}")


def maximize_units(model: nn.Module, layer: str, units: Sequence[int], settings: Settings = Settings(), *,
                   kind: str = "channel", diversity: float = 0.0, facets: int = 1, diversity_layer: str | None = None,
                   mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
                   device: torch.device | str = "cpu", batch: int = 16, ctx=None) -> UnitImages:
    """`facets` images per unit, `batch` images per run; with diversity > 0 the facets of each unit are
    pushed apart by that weight times the Gram-matrix diversity term at `diversity_layer` (default:
    `layer`; a rectified layer works much better than a pre-activation, whose Gram matrices are
    dominated by the biases and look alike for any image). With a run's `ctx` (whose model is
    `model`), each run is one of its map_tasks: rendered on the workers when the engine has them."""
    units = [int(u) for u in units] if kind != "layer" else [-1]
    per_run = max(1, batch // facets)
    chunks = [[u for u in units[start:start + per_run] for _ in range(facets)]
              for start in range(0, len(units), per_run)]
    tasks = [(layer, kind, chunk, diversity if facets > 1 else 0.0, facets, diversity_layer or layer, settings,
              tuple(mean), tuple(std)) for chunk in chunks]
    made = (ctx.map_tasks(maximize_task, tasks) if ctx is not None
            else (maximize_chunk(model, device, task) for task in tasks))
    images, scores = zip(*made)
    return UnitImages(layer, [u for chunk in chunks for u in chunk], np.concatenate(images), np.concatenate(scores))


def maximize_chunk(model: nn.Module, device: torch.device | str, task: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(images, scores) of one run of maximize_units: task = (layer, kind, units, diversity, facets,
    diversity_layer, settings, mean, std)."""
    layer, kind, chunk, diversity, facets, diversity_layer, settings, mean, std = task
    goal = unit_objective(kind, layer, chunk if kind != "layer" else 0)
    objective = goal + diversity * obj.diversity(diversity_layer, group_size=facets) if diversity else goal
    made = render(model, objective, len(chunk), settings, mean=mean, std=std, device=device)
    # the reported score leaves out the diversity term: it measures the unit alone (render
    # already scored the final images on `objective`, which is `goal` without diversity)
    scores = made.scores if objective is goal else evaluate(model, goal, made.images, mean=mean, std=std,
                                                            device=device)
    return made.images, scores


def maximize_task(ctx, task: tuple) -> tuple[np.ndarray, np.ndarray]:
    """maximize_chunk as a RunContext.map_tasks task (module-level, so a worker process can run it)."""
    return maximize_chunk(ctx.module, ctx.device, task)


def unit_pictures(model: nn.Module, layer: str, units: Sequence[int], settings: Settings, *,
                  kind: str = "channel", mean: Sequence[float] = (0.0, 0.0, 0.0),
                  std: Sequence[float] = (1.0, 1.0, 1.0), device: torch.device | str = "cpu",
                  cache: VisualizationCache | None = None, batch: int = 16,
                  limit: int | None = None, ctx=None) -> tuple[dict[int, np.ndarray], int]:
    """({unit: picture}, how many were rendered rather than read from the cache) for units of `layer`;
    with a `limit`, at most that many are rendered (the first in `units` order) and the rest left out.
    With a run's `ctx` (whose model is `model`), each batch of units is one of its map_tasks: rendered
    on the Ray workers with --engine ray.

    One recipe for every plugin, so that channel_maximization and semantic_dictionary share pictures.
    """
    recipe = {"objective": kind, "settings": settings.as_dict()}
    rendered = 0

    def task(chunk: list[int]) -> tuple:
        nonlocal rendered
        rendered += len(chunk)
        return layer, kind, chunk, settings, tuple(mean), tuple(std)

    def make_all(chunks: list[list[int]]):
        return ctx.map_tasks(render_chunk, [task(chunk) for chunk in chunks])

    return cached_units(cache, layer, units, recipe, lambda chunk: render_units(model, device, task(chunk)), batch,
                        limit, make_all if ctx is not None else None), rendered


def render_units(model: nn.Module, device: torch.device | str, task: tuple) -> np.ndarray:
    """(len(units), H, W, 3) floats in [0, 1] for a task (layer, kind, units, settings, mean, std)."""
    layer, kind, units, settings, mean, std = task
    return render(model, unit_objective(kind, layer, units), len(units), settings, mean=mean, std=std,
                  device=device).images


def render_chunk(ctx, task: tuple) -> np.ndarray:
    """render_units as a RunContext.map_tasks task (module-level, so a worker process can run it)."""
    return render_units(ctx.module, ctx.device, task)


def unit_labels(units: Sequence[int], scores: Sequence[float]) -> list[str]:
    """Short tile labels: "12: 3.21" (unit and score), or the score alone for a whole layer."""
    return [f"{u}: {s:.3g}" if u >= 0 else f"{s:.3g}" for u, s in zip(units, scores)]


def output_channels(model: nn.Module, layer: str, size: int, device: torch.device | str) -> int:
    """How many channels `layer` outputs, from one forward pass of a grey image."""
    grey = torch.zeros(1, 3, size, size, device=device)
    return int(layer_outputs(model, grey, [layer])[layer].shape[1])


def parse_list(text: str, what: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"{what} is empty")
    return parts


def check_channels(value: str) -> str | None:
    if value.strip() == "auto":
        return None
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        return "use auto or a comma-separated list of channel indices (0, 1, ...)"
    return None


class ChannelMaximization(Plugin):
    name = "channel_maximization"
    title = "Neuron and channel maximization"
    description = (
        "Images optimized to excite one unit each (Olah et al. 2017): a channel (its mean over positions), "
        "a neuron (one channel at the centre position) or a whole layer (DeepDream, mean of squares), with "
        "the same regularization as class maximization. Optional diversity shows several facets of each unit. "
        "A ReLU layer is optimized at its input (a unit that is off gets no gradient through the ReLU)."
    )
    scope = Scope.MODEL
    params = (
        Param("layers", str, "auto", "comma-separated layer names (see nnvis layers); auto = convolutions "
              "spread through the network"),
        Param("sample", int, 3, "how many layers `auto` picks", minimum=1, maximum=64),
        Param("channels", str, "auto", "auto (spread over the layer) or comma-separated channel indices",
              check=check_channels),
        Param("per_layer", int, 4, "channels per layer when channels=auto", minimum=1, maximum=512),
        Param("unit", str, "channel", "channel, neuron (centre position) or layer (DeepDream)", choices=UNITS),
        Param("diversity", float, 0.0, "weight of the diversity term, measured at the layer's ReLU output "
              "(0: off; try 0.3)", minimum=0.0),
        Param("facets", int, 3, "images per unit when diversity > 0", minimum=1, maximum=16),
        Param("cache", bool, True, "reuse channel images stored on disk ($NNVIS_CACHE, default ~/.cache/nnvis)"),
        *optimization_params(),
    )

    def default_layers(self, model) -> list[str]:
        sample = next(p.default for p in self.params if p.name == "sample")
        return sample_layers(model, sample)

    def run_model(self, ctx, params) -> Result:
        settings = settings_from(ctx, params)
        model, device, preprocess = ctx.module, ctx.device, ctx.model.preprocess
        layers = (sample_layers(model, params["sample"]) if params["layers"].strip() == "auto"
                  else parse_list(params["layers"], "layers"))
        facets = params["facets"] if params["diversity"] > 0 else 1
        kind = params["unit"]
        cache = VisualizationCache(default_cache_dir(), model_fingerprint(model)) if params["cache"] else None
        common = dict(mean=preprocess.mean, std=preprocess.std, device=device)
        artifacts, metrics = [], {}
        for named in layers:
            ctx.layer(named)  # a clear error for an unknown name
            layer = preactivation(model, named)
            count = output_channels(model, layer, ctx.model.preprocess.side, device)
            units = self._units(params, count, layer)
            where = "" if layer == named else f"optimized at the ReLU's input {layer}; "
            if facets == 1 and kind != "layer":
                pictures, _ = unit_pictures(model, layer, units, settings, kind=kind, cache=cache,
                                            batch=ctx.batch_size, ctx=ctx, **common)
                images = np.stack([pictures[u] for u in units])
                scores = evaluate(model, unit_objective(kind, layer, units), images, **common)
                order = units
            else:
                rectified = named if named != layer else rectified_output(model, layer)
                made = maximize_units(model, layer, units, settings, kind=kind, diversity=params["diversity"],
                                      facets=facets, diversity_layer=rectified, batch=ctx.batch_size, ctx=ctx,
                                      **common)
                images, scores, order = list(made.images), made.scores, made.units
            artifacts.append(Gallery(f"{kind} maximization at {named}", list(images), labels=unit_labels(order, scores),
                                     columns=facets if facets > 1 else 0,
                                     caption=f"{where}label: {'' if kind == 'layer' else kind + ' and '}its "
                                             f"activation on the image; {describe(settings)}"))
            metrics[f"mean_activation:{layer}"] = float(np.mean(scores))
            if params["show_plain"]:
                plain = maximize_units(model, layer, units, plain_settings(settings), kind=kind,
                                       batch=ctx.batch_size, ctx=ctx, **common)
                artifacts.append(Gallery(
                    f"plain optimization at {named}, for comparison", list(plain.images),
                    labels=unit_labels(plain.units, plain.scores),
                    caption="pixels, RGB, no transforms, no penalties"))
        return Result(artifacts, metrics)

    @staticmethod
    def _units(params, count: int, layer: str) -> list[int]:
        if params["unit"] == "layer":
            return [-1]
        if params["channels"].strip() == "auto":
            return spread(params["per_layer"], count)
        units = [int(c) for c in parse_list(params["channels"], "channels")]
        wrong = [u for u in units if u >= count]
        if wrong:
            raise LayerError(f"layer {layer} has {count} channels (0-{count - 1}); asked for {wrong}")
        return units


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(ChannelMaximization())
