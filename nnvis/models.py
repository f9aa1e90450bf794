"""Models given as objects (nn.Module) to nnvis.run and nnvis.explain: registered, for one call,
under the model source `python:N`, with their preprocessing and class names, and their
train/eval mode and device put back afterwards."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from nnvis_core.contract.plugin import Plugin
from nnvis_core.hook_marker import hookimpl
from nnvis_core.models import ModelOptions
from nnvis_core.models.layers import forget_input_size
from nnvis_core.models.loaded import LoadedModel, Preprocess
from nnvis_core.models.logits import remove_output_selection
from nnvis_core.models.source import ModelSource
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


def linear_input_side(model: torch.nn.Module) -> int | None:
    """The side of the square RGB input a model's first layer with weights reads when it is a
    Linear layer (an MLP on flattened pixels): 3 x side x side inputs; None otherwise."""
    first = next((m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d,
                                                                  torch.nn.LazyLinear))), None)
    if not isinstance(first, torch.nn.Linear) or isinstance(first, torch.nn.LazyLinear):
        return None
    side = round((first.in_features / 3) ** 0.5)
    return side if 3 * side * side == first.in_features else None


def assumed_preprocess(model: torch.nn.Module, no_names: bool) -> Preprocess:
    """The preprocessing of a module given without `preprocess` nor weights that say it: its first
    Linear layer's input size where it has one (no resize beyond it), else ImageNet's 256 / 224;
    ImageNet's mean and std either way. Says what it assumed, once."""
    side = linear_input_side(model)
    if side is not None:
        _warn_assumed(model, f"its first Linear layer reads 3x{side}x{side}, so images are resized to "
                             f"{side}x{side} (no crop beyond it) with ImageNet's mean and std", no_names)
        return Preprocess(side, side)
    side = small_input_side(model)
    if side is not None:
        _warn_assumed(model, f"it takes 3x{side}x{side} inputs and not ImageNet's 224, so images are resized to "
                             f"{side}x{side} (no crop beyond it) with ImageNet's mean and std", no_names)
        return Preprocess(side, side)
    _warn_assumed(model, "assumed ImageNet's preprocessing: resize 256, crop 224, ImageNet's mean and std", no_names)
    return Preprocess(256, 224)


SMALL_SIDES = (32, 28, 64, 96, 128)  # input sides tried, in order, on a model that refuses 224 x 224


def small_input_side(model: torch.nn.Module) -> int | None:
    """The side of a tiny square input (CIFAR's 32, MNIST's 28...) a model takes where it refuses
    224 x 224, found by trying; None where it takes 224 or none of SMALL_SIDES."""
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    training = model.training
    model.eval()  # batch norm takes one image in eval mode

    def takes(side: int) -> bool:
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, side, side, device=device))
        except Exception:  # noqa: BLE001 - any refusal means: not this size
            return False
        return True

    try:
        return None if takes(224) else next((side for side in SMALL_SIDES if takes(side)), None)
    finally:
        model.train(training)


def _warn_assumed(model: torch.nn.Module, what: str, no_names: bool) -> None:
    names = "; class names class 0, class 1... (none given)" if no_names else ""
    warnings.warn(f"nnvis: {type(model).__name__} was given without preprocess: {what}{names}. Say otherwise with "
                  f"preprocess={{'resize': ..., 'crop': ..., 'mean': [...], 'std': [...]}}"
                  f"{' and class_names=[...]' if no_names else ''}", UserWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """warnings.warn's stacklevel of the first frame outside nnvis: the user's call."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("nnvis"):
        frame, level = frame.f_back, level + 1
    return level


@dataclass
class Models:
    """The run's model specs, with modules in memory registered under `python:N`, and their state to restore."""

    specs: list[str]
    registry: Registry
    saved: list[tuple[torch.nn.Module, bool, torch.device | None]]

    def restore(self) -> None:
        for module, training, device in self.saved:
            remove_output_selection(module)
            forget_input_size(module)
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
        if preprocess is None and inferred is None:
            chosen = assumed_preprocess(model, class_names is None)
        else:
            chosen = _as_preprocess(preprocess) if preprocess is not None or inferred is None else inferred[0]
            if class_names is None and inferred is None:
                warnings.warn(f"nnvis: {type(model).__name__} was given without class_names: class names class 0, "
                              f"class 1... Say otherwise with class_names=[...]", UserWarning,
                              stacklevel=_caller_level())
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
