"""Every hook nnvis calls. A plugin module implements any of them with
`@nnvis_core.hookimpl` and is found through the `nnvis` entry-point group.

Hooks receive a `register` callback and the core owns what is registered, so
that it can reject duplicate names with a message naming both sources.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

from nnvis_core.plugin import PROJECT

if TYPE_CHECKING:
    from nnvis_core.models.sources import ModelSource
    from nnvis_core.plugin import Plugin

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def nnvis_register_plugins(register: Callable[["Plugin"], None]) -> None:
    """Register visualization methods.

    Called once when the registry loads. Call `register(plugin)` with an
    instance of a `nnvis_core.Plugin` subclass for each method the module
    provides. Its `name` must be unique across all installed plugins.
    """


@hookspec
def nnvis_register_model_sources(register: Callable[["ModelSource"], None]) -> None:
    """Register ways to load a model from a `--model` value.

    Called once when the registry loads. Call `register(source)` with a
    `nnvis_core.models.ModelSource`: it names a prefix (`torchvision` serves
    `--model torchvision:resnet18`) and loads a `LoadedModel` from the rest.
    """
