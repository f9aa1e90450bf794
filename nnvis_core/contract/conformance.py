"""Checks of one plugin call that the report run and the test kit share.

The test kit (nnvis_core.testing) once checked more than `nnvis report` did: a map of
another aspect ratio than its image was refused by the kit and silently stretched by
the report, and a forward hook left on the model failed the kit's tests while the
report carried on with the hook still attached. Both now ask this module, so a
plugin that passes its tests behaves in a report, and a report refuses what the kit
refuses, with the same words.

    before = hook_keys(model)
    ...  # the plugin call
    leaked = remove_leaked_hooks(model, before)   # ["a forward hook on layer 'features.3'", ...]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn
from torch.nn.modules import module as torch_module

from nnvis_core.contract.artifacts import Artifact, CategoricalMap, Chart, Gallery, Heatmap, Image, Result

# How far a map's height/width ratio may stray from the input's, relative to it: a 7x7 layer over
# a 224x224 image matches, and so does a 7x10 one over 224x320 (0.700 against 0.700).
ASPECT_TOLERANCE = 0.1

# Per-module hook registries of torch.nn.Module (dicts keyed by handle id), with what they hold.
MODULE_HOOKS = {
    "_forward_hooks": "forward hook", "_forward_pre_hooks": "forward pre-hook",
    "_backward_hooks": "backward hook", "_backward_pre_hooks": "backward pre-hook",
    "_state_dict_hooks": "state_dict hook", "_load_state_dict_pre_hooks": "load_state_dict pre-hook",
}
# torch's global module hooks (register_module_forward_hook, ...): they fire on every module.
GLOBAL_HOOKS = {
    "_global_forward_hooks": "global forward hook", "_global_forward_pre_hooks": "global forward pre-hook",
    "_global_backward_hooks": "global backward hook", "_global_backward_pre_hooks": "global backward pre-hook",
}

HookKeys = dict[tuple[str, str], frozenset]  # (module name, or "" for torch's globals; registry) -> handle ids

# Side tables torch keeps beside a registry, keyed by the same handle id (what handle.remove() clears too).
_SIDE_TABLES = {"_forward_hooks": ("_forward_hooks_with_kwargs", "_forward_hooks_always_called"),
                "_forward_pre_hooks": ("_forward_pre_hooks_with_kwargs",),
                "_global_forward_hooks": ("_global_forward_hooks_always_called",)}


def aspect_problem(map_shape: tuple[int, ...], input_shape: tuple[int, ...]) -> str | None:
    """Why a (h, w) map cannot be drawn over an (H, W) input, or None when their aspect ratios agree.

    A map is resized to the input, so a smaller one of the same shape is fine (a CAM at 8x8 over
    64x64); one of another aspect ratio would be stretched into a picture it never described.
    """
    (height, width), (map_height, map_width) = input_shape[:2], map_shape[:2]
    if min(height, width, map_height, map_width) <= 0:
        return f"map of shape {tuple(map_shape)} cannot cover a {height}x{width} input"
    if abs(map_height / map_width - height / width) > ASPECT_TOLERANCE * height / width:
        return (f"map of shape {tuple(map_shape)} does not have the aspect ratio of the {height}x{width} input "
                "(it would be stretched)")
    return None


def overlay_problem(artifact: Artifact, input_shape: tuple[int, ...]) -> str | None:
    """One line on an overlay map (Heatmap or CategoricalMap with overlay=True) that does not fit
    the input of shape (H, W, ...), or None."""
    if not isinstance(artifact, (Heatmap, CategoricalMap)) or not artifact.overlay:
        return None
    values = artifact.values if isinstance(artifact, Heatmap) else artifact.categories
    shape = tuple(getattr(values, "shape", ()))
    if len(shape) != 2:
        return None  # the artifact's own validate() names a map that is not 2-D
    problem = aspect_problem(shape, input_shape)
    if problem is None:
        return None
    height, width = input_shape[:2]
    return (f"{artifact.kind} '{artifact.title}' of shape {shape} is drawn over a {height}x{width} input: "
            "give it the input's aspect ratio, or overlay=False")


def hook_keys(model: nn.Module) -> HookKeys:
    """The hooks on every module of `model` and torch's global module hooks, by handle id.

    Only registries that hold a hook are listed: taken around every call of a run, the
    snapshot should cost little on a model of hundreds of modules."""
    return {(name, registry): frozenset(hooks) for name, registry, hooks in _registries(model) if hooks}


def hooks_changed(before: HookKeys, after: HookKeys, left: bool = True) -> list[str]:
    """Each registry whose hooks differ, as a phrase naming the layer:
    "a forward hook left on layer 'features.0'", or "... removed from ..." (only those with `left` False)."""
    changes = []
    for place in sorted(before.keys() | after.keys()):
        old, new = before.get(place, frozenset()), after.get(place, frozenset())
        if left and new - old:
            changes.append(f"{_count(len(new - old), place)} left on {_where(place)}")
        if old - new:
            changes.append(f"{_count(len(old - new), place)} removed from {_where(place)}")
    return changes


def remove_leaked_hooks(model: nn.Module, before: HookKeys) -> list[str]:
    """Remove every hook added to `model` (or to torch's globals) since `before`; say where each was:
    ["a forward hook on layer 'features.3'"], empty when none was left.

    The run calls it after each plugin call, so that a forgotten hook fails that call, not
    every later call of every plugin, and the model goes on as it was found."""
    leaked = []
    for name, registry, hooks in _registries(model):
        added = set(hooks or ()) - before.get((name, registry), frozenset())
        if not added:
            continue
        owner = torch_module if registry in GLOBAL_HOOKS else model.get_submodule(name)
        tables = [hooks] + [getattr(owner, side, None) for side in _SIDE_TABLES.get(registry, ())]
        for table in tables:
            for key in added:
                if table is not None and key in table:
                    del table[key]
        leaked.append(f"{_count(len(added), (name, registry))} on {_where((name, registry))}")
    return leaked


def _registries(model: nn.Module) -> list[tuple[str, str, Any]]:
    """(module name, registry name, the registry dict or None) for every module and torch's globals."""
    found = [(name, registry, getattr(module, registry, None))
             for name, module in model.named_modules() for registry in MODULE_HOOKS]
    return found + [("", registry, getattr(torch_module, registry, None)) for registry in GLOBAL_HOOKS]


def _where(place: tuple[str, str]) -> str:
    name, registry = place
    return f"torch's {registry}" if registry in GLOBAL_HOOKS else f"layer '{name or '(root)'}'"


def _count(number: int, place: tuple[str, str]) -> str:
    what = GLOBAL_HOOKS.get(place[1]) or MODULE_HOOKS[place[1]]
    return f"a {what}" if number == 1 else f"{number} {what}s"


def degenerate_reasons(result: Result) -> tuple[str, ...]:
    """Why a result that passed every check still shows nothing, one phrase per artifact: a map that is
    zero or constant everywhere, a picture (or every picture of a gallery) of one flat colour, a loss
    (a Chart marked `minimized`) that ended no lower than it started. Empty for a result that shows
    something. The run records them beside the result, so that the card and the leaderboard say so
    instead of a plain ok; the values themselves are kept (non-finite ones were refused already)."""
    reasons = []
    for artifact in result.artifacts:
        if isinstance(artifact, Heatmap):
            values = np.asarray(artifact.values, dtype=np.float64)
            if values.size and not values.any():
                reasons.append(f"heatmap '{artifact.title}' is zero everywhere")
            elif values.size and values.max() <= values.min():
                reasons.append(f"heatmap '{artifact.title}' is constant ({values.flat[0]:.4g} everywhere)")
        elif isinstance(artifact, Image) and _flat(artifact.pixels):
            reasons.append(f"image '{artifact.title}' is one flat colour")
        elif isinstance(artifact, Gallery):  # tiles that show a report image (None) show something
            pictures = [picture for picture in artifact.images if picture is not None]
            if pictures and len(pictures) == len(artifact.images) and all(_flat(picture) for picture in pictures):
                reasons.append(f"every picture of gallery '{artifact.title}' is one flat colour")
        elif isinstance(artifact, Chart) and artifact.minimized:
            for name, values in artifact.series.items():
                if len(values) >= 2 and values[-1] >= values[0]:
                    reasons.append(f"'{name}' of chart '{artifact.title}' did not decrease "
                                   f"(first {values[0]:.4g}, last {values[-1]:.4g})")
    return tuple(reasons)


def _flat(pixels: Any) -> bool:
    values = np.asarray(pixels)
    return bool(values.size) and bool((values == values.reshape(-1, values.shape[-1])[0]).all())
