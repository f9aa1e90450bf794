"""Models given as objects (nn.Module) to nnvis.run and nnvis.explain: registered, for one call,
under the model source `python:N`, with their preprocessing and class names, and their
train/eval mode and device put back afterwards."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from nnvis_core.hook_marker import hookimpl
from nnvis_core.models import ModelOptions
from nnvis_core.models.loaded import LoadedModel, Preprocess
from nnvis_core.models.source import ModelSource
from nnvis_core.contract.plugin import Plugin
from nnvis_core.run.plan import UsageError
from nnvis_core.run.registry import Origin, Registered, Registry, check_plugin, load_registry

IN_MEMORY = "python"  # the model source prefix of models given as nn.Module


class InMemoryModels(ModelSource):
    """`python:N`: the N-th nn.Module this call of nnvis.run was given."""

    name = IN_MEMORY
    description = "a model in memory (nnvis.run and nnvis.explain given an nn.Module)"

    def __init__(self, models: list[LoadedModel]):
        self.models = models

    def load(self, target: str, options: ModelOptions) -> LoadedModel:
        return self.models[int(target)]


def _as_preprocess(preprocess: Preprocess | dict | None) -> Preprocess:
    if isinstance(preprocess, Preprocess):
        return preprocess
    given = dict(preprocess or {})
    unknown = set(given) - {"resize", "crop", "mean", "std"}
    if unknown:
        raise UsageError(f"preprocess: unknown keys {', '.join(sorted(unknown))} (use resize, crop, mean, std)")
    statistics = {k: tuple(given[k]) for k in ("mean", "std") if k in given}
    return Preprocess(given.get("resize", 256), given.get("crop", 224), **statistics)


@dataclass
class Models:
    """The run's model specs, with modules in memory registered under `python:N`, and their state to restore."""

    specs: list[str]
    registry: Registry
    saved: list[tuple[torch.nn.Module, bool, torch.device | None]]

    def restore(self) -> None:
        for module, training, device in self.saved:
            module.train(training)
            if device is not None:
                module.to(device)


def _inferred(model: torch.nn.Module, weights: Any) -> tuple[Preprocess, list[str], list[str]] | None:
    """(preprocessing, class names, notes) read off torchvision weights (a WeightsEnum member given
    as `weights`) or off a timm model's own pretrained config; None when neither says."""
    if weights is not None and hasattr(weights, "transforms") and hasattr(weights, "meta"):
        from nnvis_core.models.torchvision_source import preprocess_from

        return preprocess_from(weights), list(weights.meta.get("categories") or []), []
    if getattr(model, "pretrained_cfg", None):
        from nnvis_core.models import timm_source

        preprocess, notes = timm_source.preprocess_from(model)
        return preprocess, timm_source.class_names(model), notes
    return None


def model_specs(models: Sequence[Any], preprocess, class_names, plugins: Sequence[Plugin] = (),
            weights: Any = None) -> Models:
    loaded: list[LoadedModel] = []
    specs, saved = [], []
    for model in models:
        if isinstance(model, (str, Path)):
            specs.append(str(model))
            continue
        if not isinstance(model, torch.nn.Module):
            raise UsageError(f"model: expected a model spec (str) or a torch.nn.Module, got {type(model).__name__}")
        first = next(iter(model.parameters()), None)
        saved.append((model, model.training, first.device if first is not None else None))
        inferred = _inferred(model, weights) if preprocess is None or class_names is None else None
        chosen = _as_preprocess(preprocess) if preprocess is not None or inferred is None else inferred[0]
        names = list(class_names) if class_names is not None else (inferred[1] if inferred else [])
        described = f"in memory ({weights})" if weights is not None and not isinstance(weights, str) else "in memory"
        notes = inferred[2] if inferred and preprocess is None else []
        loaded.append(LoadedModel(model, type(model).__name__, described, names, chosen, "python (in memory)", notes))
        specs.append(f"{IN_MEMORY}:{len(loaded) - 1}")
    extra = []
    if loaded or plugins:
        holder = type("InMemory", (), {})()
        holder.nnvis_register_model_sources = hookimpl(lambda register: register(InMemoryModels(loaded)))
        holder.nnvis_register_plugins = hookimpl(lambda register: [register(plugin) for plugin in plugins])
        extra.append(("nnvis-python", holder))
    registry = load_registry(extra=extra)
    for plugin in plugins:
        given_wins(registry, plugin)
    return Models(specs, registry, saved)


def given_wins(registry: Registry, plugin: Plugin) -> None:
    """A Plugin object given to nnvis.run runs, even where an installed plugin has its name: the
    registry keeps the first of two names (the installed one), so the given one replaces it here,
    with a warning that names both."""
    try:
        check_plugin(plugin)
    except ValueError as error:
        raise UsageError(f"plugin {getattr(plugin, 'name', plugin)!r}: {error}") from None
    installed = registry.plugins.get(plugin.name)
    if installed is None or installed.item is plugin:
        return
    warnings.warn(f"plugin {plugin.name!r}: the object given to nnvis.run runs instead of the installed plugin "
                  f"of that name ({installed.origin}, {installed.origin.module}) for this run", UserWarning,
                  stacklevel=4)
    registry.plugins[plugin.name] = Registered(plugin, Origin(type(plugin).__module__, "(registered directly)", ""))
    registry.failures[:] = [failure for failure in registry.failures
                            if not (failure.name == plugin.name and failure.distribution == "(registered directly)")]
