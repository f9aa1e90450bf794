"""Sanity check by cascading model randomization (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

The layers with weights (convolutions, Linear, attention projections) of a *copy* of the model are
re-initialised one after another from the top (the classifier) down; after each
step every method's map is computed again and compared with the trained
model's map by Spearman rank correlation of the absolute values. A method whose
map hardly changes when the layers that make the decision are random does not
explain that decision. The paper's finding: the gradient and its SmoothGrad
decorrelate quickly; guided backprop (and guided Grad-CAM) largely do not.

>>> from nnvis_plugins.attribution import sanity
>>> cascade = sanity.cascading_randomization(model, images, targets, ["gradient", "guided_backprop"])
>>> cascade.correlations["gradient"]   # (levels + 1, N), level 0 = trained
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from nnvis_core import Chart, Image, Param, Plugin, Result, Scope, Table, hookimpl
from nnvis_core.contract.params import resolve_params
from nnvis_core.metrics.randomisation import reinitialise, similarity, weighted_layers
from nnvis_core.toolkit import AttributionPlugin, Target, gradient, preserved, reduce_channels
from nnvis_plugins.attribution import gradcam, guided_gradcam, integrated_gradients, smoothgrad

MapFunction = Callable[[nn.Module, torch.Tensor, Target, dict], torch.Tensor]


def _per_pixel(maps: torch.Tensor) -> torch.Tensor:
    return maps.abs()[:, 0] if maps.shape[1] == 1 else reduce_channels(maps, "abs_max")


# name -> (model, inputs, target, options) -> (N, H, W) absolute map
METHODS: dict[str, MapFunction] = {
    "gradient": lambda m, x, t, o: _per_pixel(gradient(m, x, t, batch_size=o.get("batch_size"))),
    "gradient_x_input": lambda m, x, t, o: (x * gradient(m, x, t, batch_size=o.get("batch_size"))).sum(1).abs(),
    "deconvnet": lambda m, x, t, o: _per_pixel(gradient(m, x, t, rule="deconvnet", batch_size=o.get("batch_size"))),
    "guided_backprop": lambda m, x, t, o: _per_pixel(gradient(m, x, t, rule="guided", batch_size=o.get("batch_size"))),
    "smoothgrad": lambda m, x, t, o: _per_pixel(smoothgrad.attribute(
        m, x, t, samples=o.get("samples", 16), batch_size=o.get("batch_size"), generator=o.get("generator"))),
    "integrated_gradients": lambda m, x, t, o: integrated_gradients.attribute(
        m, x, t, o.get("baselines"), o.get("steps", 16), batch_size=o.get("batch_size")).sum(1).abs(),
    "gradcam": lambda m, x, t, o: _per_pixel(gradcam.attribute(m, x, t, o.get("layer", "auto"))),
    "guided_gradcam": lambda m, x, t, o: _per_pixel(
        guided_gradcam.attribute(m, x, t, o.get("layer", "auto"), batch_size=o.get("batch_size"))),
}
DEFAULT_METHODS = ("gradient", "smoothgrad", "integrated_gradients", "gradient_x_input", "deconvnet",
                   "guided_backprop", "gradcam", "guided_gradcam")
# methods=run: the defaults and every other attribution plugin of the run, so that each method the
# leaderboard lists gets its rank correlation.
RUN = "run"
SANITY_ALIASES = {"saliency": "gradient"}  # a plugin whose map a built-in method already draws


@dataclass
class Cascade:
    levels: list[str]  # "trained", then the top-most layer randomized so far at each level
    correlations: dict[str, np.ndarray]  # method -> (len(levels), N) Spearman vs the trained map
    maps: dict[str, list[torch.Tensor]]  # method -> per level (N, H, W) absolute maps
    dropped: dict[str, str] = field(default_factory=dict)  # optional method -> why it could not run


def measured_levels(count: int, max_levels: int) -> list[int]:
    """Which of the `count` cumulative randomization steps to measure (1-based), evenly, always the last."""
    if count <= max_levels:
        return list(range(1, count + 1))
    return sorted({int(round(v)) for v in np.linspace(1, count, max_levels)})


SIMILARITY_TITLES = {"spearman": "Spearman rank correlation", "ssim": "SSIM"}


def cascading_randomization(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target,
    methods: Sequence[str] = DEFAULT_METHODS,
    max_levels: int = 24,
    seed: int = 0,
    options: dict | None = None,
    more_methods: dict[str, MapFunction] | None = None,
    optional: Collection[str] = (),
    similarity_name: str = "spearman",
) -> Cascade:
    """Maps of each method as the copy's layers are re-initialised from the top down.

    The model itself is never modified: the work is done on a deep copy. target:
    the trained model's classes are kept at every level. options: batch_size,
    samples (SmoothGrad), steps and baselines (IG), layer (Grad-CAM; a name).
    more_methods: map functions for names beyond METHODS (plugin_method makes one
    from any attribution plugin). optional: methods that are left out, with their
    error in Cascade.dropped, when they fail on the trained model (those the run
    added, not the user), rather than failing the whole check. similarity_name: how each level's map is
    compared with the trained one's (nnvis_core.metrics.randomisation.SIMILARITIES; the maps are absolute).
    """
    known = {**METHODS, **(more_methods or {})}
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"unknown method {', '.join(unknown)}; use {', '.join(known)}")
    options = dict(options or {})
    work = copy.deepcopy(model)
    layers = weighted_layers(work)[::-1]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no conv or linear layer to randomize")
    modules = dict(work.named_modules())
    measure = set(measured_levels(len(layers), max_levels))
    maps: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    dropped: dict[str, str] = {}
    levels = ["trained"]

    def compute() -> None:
        for method in list(maps):
            generator = torch.Generator().manual_seed(seed + 1)  # the same noise at every level
            try:
                computed = known[method](work, inputs, target, {**options, "generator": generator})
            except Exception as error:  # noqa: BLE001 - an optional method that cannot run here is left out
                if method not in optional or maps[method]:
                    raise
                dropped[method] = str(error).splitlines()[0] if str(error) else type(error).__name__
                del maps[method]
                continue
            maps[method].append(computed.detach().cpu())

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        compute()
        if not maps:
            raise ValueError("no method could map these images: " + "; ".join(f"{m}: {e}" for m, e in dropped.items()))
        for step, name in enumerate(layers, start=1):
            reinitialise(modules[name])
            if step in measure:
                levels.append(name)
                compute()
    correlations = {}
    for method, per_level in maps.items():
        trained = per_level[0].numpy()
        correlations[method] = np.array([
            [similarity(trained[i], level[i].numpy(), similarity_name) for i in range(trained.shape[0])]
            for level in per_level
        ])
    return Cascade(levels, correlations, maps, dropped)


def plugin_method(plugin: AttributionPlugin, params: dict, ctx, items: Sequence) -> MapFunction:
    """A map function for any attribution plugin: its card's map of each of `items`, absolute,
    computed on whatever model the cascade passes (a randomized copy) through plugin.heatmap."""

    def compute(model: nn.Module, inputs: torch.Tensor, target: Target, options: dict) -> torch.Tensor:
        work = dataclasses.replace(ctx, model=dataclasses.replace(ctx.model, module=model))
        targets = torch.as_tensor(target).reshape(-1).tolist()
        targets = targets * len(items) if len(targets) == 1 else targets
        # The same random draws at every level, without moving the stream the re-initialisations use.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options["generator"].initial_seed())
            return torch.stack([plugin.heatmap(work, item, int(t), params).abs() for item, t in zip(items, targets)])

    return compute


def attribution_plugins(plugins: Mapping[str, object]) -> dict[str, AttributionPlugin]:
    """The installed attribution plugins by name (built-in or third-party)."""
    return {name: plugin for name, plugin in plugins.items() if isinstance(plugin, AttributionPlugin)}


def _grid(cascade: Cascade, index: int = 0, columns: int = 6) -> np.ndarray:
    """Rows of methods, columns of levels (evenly picked), each map scaled to [0, 1]; white gutters."""
    count = len(cascade.levels)
    picks = sorted({int(round(v)) for v in np.linspace(0, count - 1, min(columns, count))})
    rows = []
    for method, per_level in cascade.maps.items():
        cells = []
        for level in picks:
            cell = per_level[level][index].float().numpy()
            top = cell.max()
            cells.append(cell / top if top > 0 else cell)
            cells.append(np.ones((cell.shape[0], 2)))
        rows.append(np.concatenate(cells[:-1], axis=1))
        rows.append(np.ones((2, rows[-1].shape[1])))
    grey = np.concatenate(rows[:-1], axis=0)
    return np.repeat(grey[..., None], 3, axis=2).clip(0, 1)


class SanityCheck(Plugin):
    name = "sanity_check"
    title = "Sanity check: cascading randomization (MPRT)"
    description = (
        "Adebayo et al. (2018): a copy of the model has its layers re-initialised from the top down; after each "
        "step every method's map is compared with the trained model's map (Spearman rank correlation of "
        "absolute values, or SSIM, averaged over a few images). Maps that stay similar while the decision "
        "layers are random are not explaining the decision. Quantus calls it the model parameter "
        "randomisation test (MPRT). The model itself is not modified."
    )
    scope = Scope.DATASET
    params = (
        Param("methods", str, RUN,
              f"comma-separated methods: {', '.join(METHODS)}, or any installed attribution plugin by name; "
              f"{RUN}: {', '.join(DEFAULT_METHODS)} and every other attribution plugin this run computes",
              check=lambda v: None if _names(v) else "name at least one method"),
        Param("images", int, 4, "images used, one per class first", minimum=1, maximum=64),
        Param("similarity", str, "spearman", "how each level's |map| is compared with the trained model's: "
              "spearman (rank correlation: the paper's main figures, Quantus's MPRT default, and the leaderboard's "
              "pass below 0.5) or ssim (structural similarity, the paper's other measure; no verdict)",
              choices=("spearman", "ssim")),
        Param("target", str, "predicted", "class to explain: predicted, true, an index or a class name"),
        Param("max_levels", int, 12, "randomization levels measured (evenly spread over the layers)",
              minimum=1, maximum=1000),
        Param("samples", int, 16, "SmoothGrad: noisy copies per map", minimum=1, maximum=1000),
        Param("steps", int, 16, "Integrated Gradients: points per path", minimum=2, maximum=1000),
    )

    def check_params(self, params, plugins) -> None:
        usable = {*METHODS, *attribution_plugins(plugins)}
        unknown = [m for m in _names(params["methods"]) if m not in usable and m != RUN]
        if unknown:
            raise ValueError(f"sanity_check.methods: {', '.join(unknown)} is neither a built-in method nor an "
                             f"installed attribution plugin; use {', '.join(sorted(usable))}")

    def run_dataset(self, ctx, items, params) -> Result:
        chosen = _pick(items, params["images"])
        if not chosen:
            raise ValueError("no readable image")
        inputs = torch.cat([ctx.input(item) for item in chosen])
        targets = [ctx.target(item, params["target"]) for item in chosen]
        plugins = attribution_plugins(ctx.plugins)
        given = _names(params["methods"])
        applying = [name for name in ctx.chosen if name in plugins and plugins[name].applies_to(ctx) is None]
        methods = expand_run(given, applying)
        optional = [m for m in methods if m not in given]
        more = {name: plugin_method(plugins[name], resolve_params(name, plugins[name].params, {}), ctx, chosen)
                for name in methods if name not in METHODS and name in plugins}
        black = torch.stack([ctx.model.preprocess.normalize(item.pixels * 0) for item in chosen]).to(inputs)
        options = {"batch_size": ctx.batch_size, "samples": params["samples"], "steps": params["steps"],
                   "baselines": black}
        with preserved(ctx.module):
            cascade = cascading_randomization(ctx.module, inputs, targets, methods, params["max_levels"],
                                              ctx.seed, options, more, optional, params["similarity"])
        x = list(range(len(cascade.levels)))
        series = {m: [float(v) for v in c.mean(axis=1)] for m, c in cascade.correlations.items()}
        rows = [[m, *(f"{v:.3f}" for v in values)] for m, values in series.items()]
        names = ", ".join(item.record.relpath for item in chosen)
        measure = SIMILARITY_TITLES[params["similarity"]]
        artifacts = [
            Chart(f"{measure} with the trained model's map", x, series,
                  x_label="layers re-initialised, from the top down to", y_label=f"{measure} (|map|)",
                  x_ticks=cascade.levels, caption=f"mean over {len(chosen)} images: {names}"),
            Table(f"{measure} by level (Quantus: MPRT)", ["method", *cascade.levels], rows,
                  caption="; ".join(f"{m} left out: {why}" for m, why in cascade.dropped.items())),
            Image("maps as layers are randomized", _grid(cascade),
                  caption=f"{chosen[0].record.relpath}: rows " + ", ".join(cascade.maps) + "; columns from trained to "
                          "fully randomized"),
        ]
        metrics = {f"{m}_final_{params['similarity']}": values[-1] for m, values in series.items()}
        return Result(artifacts, metrics)


def expand_run(methods: list[str], run_attributions: list[str]) -> list[str]:
    """`methods` with RUN replaced by the built-in defaults and the run's other attribution plugins
    (saliency is the built-in gradient; a name already given is not repeated)."""
    expanded: list[str] = []
    for method in methods:
        more = [*DEFAULT_METHODS, *run_attributions] if method == RUN else [method]
        for name in more:
            if SANITY_ALIASES.get(name, name) not in expanded:
                expanded.append(SANITY_ALIASES.get(name, name))
    return expanded


def _names(methods: str) -> list[str]:
    return [m.strip() for m in methods.split(",") if m.strip()]


def _pick(items, count: int) -> list:
    """Up to `count` images, first one per class (true class, else predicted), then the next ones."""
    by_class: list = []
    rest: list = []
    seen: set = set()
    for item in items:
        key = item.true_class if item.true_class is not None else item.predicted
        if key not in seen:
            seen.add(key)
            by_class.append(item)
            if len(by_class) >= count:
                break
        elif len(rest) < count:
            rest.append(item)
    return (by_class + rest)[:count]


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(SanityCheck())
