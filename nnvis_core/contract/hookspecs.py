"""Every hook nnvis calls. A plugin module implements any of them with
`@nnvis_core.hookimpl` and is found through the `nnvis` entry-point group.

Hooks receive a `register` callback and the core owns what is registered, so
that it can reject duplicate names with a message naming both sources.
docs/plugins.md quotes each docstring below; tests/docs/test_docs.py keeps them equal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

from nnvis_core.hook_marker import PROJECT

if TYPE_CHECKING:
    from nnvis_core.contract.plugin import Plugin
    from nnvis_core.models.source import ModelSource
    from nnvis_core.run.sink import SinkFactory

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def nnvis_register_plugins(register: Callable[["Plugin"], None]) -> None:
    """Register visualization methods.

    Called once, when nnvis loads its plugins (for `nnvis report`, `nnvis
    plugins` and `nnvis_core.run.registry.load_registry()`). Call `register(plugin)`
    with an instance of a `nnvis_core.Plugin` subclass for each method the
    module provides; return nothing. The plugin's `name` must be unique across
    all installed plugins. A plugin that breaks the contract (a missing title,
    a bad name, another plugin API version, a name already taken) is listed by
    `nnvis plugins` with the cause and skipped; the module's other plugins
    still register.
    """


@hookspec
def nnvis_register_model_sources(register: Callable[["ModelSource"], None]) -> None:
    """Register ways to load a model from a `--model` value.

    Called once, when nnvis loads its plugins. Call `register(source)` with an
    instance of a `nnvis_core.models.ModelSource` subclass; return nothing. The
    source's `name` is the prefix it serves (`zoo` serves `--model zoo:NAME`)
    and must be unique; its `load(target, options)` receives the text after the
    colon and a `ModelOptions`, and returns a `LoadedModel` or raises
    `ModelLoadError` with a one-line message for the user.
    """


@hookspec
def nnvis_register_sinks(register: Callable[["SinkFactory"], None]) -> None:
    """Register places a run's results can go.

    Called once, when nnvis loads its plugins. Call `register(factory)` with an
    instance of a `nnvis_core.run.sink.SinkFactory` subclass; return nothing. Its
    `create(config)` returns a sink for one run: an object with the methods of
    the `nnvis_core.run.sink.Sink` protocol, which the core calls as results
    arrive. The HTML report is the built-in sink `html`.
    """
