"""Discover plugins through the `nnvis` entry-point group and collect what they register.

Each entry point is loaded on its own: one that fails to import or register is
recorded (name, distribution, one-line cause) and skipped, so a broken plugin
never takes down `nnvis plugins`, `--help` or the report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable

import pluggy

from nnvis_core import hookspecs
from nnvis_core.plugin import PLUGIN_API_VERSION, PROJECT, Plugin, Scope

ENTRY_POINT_GROUP = "nnvis"
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class RegistryError(Exception):
    """A plugin that cannot be used, raised in strict mode."""


@dataclass(frozen=True)
class Origin:
    """Where a registered thing comes from, for listings and error messages."""

    module: str
    distribution: str
    version: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version}".strip()


@dataclass(frozen=True)
class Registered:
    item: Any
    origin: Origin


@dataclass(frozen=True)
class LoadFailure:
    name: str
    distribution: str
    error: str


@dataclass
class Registry:
    plugins: dict[str, Registered] = field(default_factory=dict)
    model_sources: dict[str, Registered] = field(default_factory=dict)
    failures: list[LoadFailure] = field(default_factory=list)

    def plugin(self, name: str) -> Plugin:
        return self.plugins[name].item


def one_line(error: BaseException) -> str:
    """The exception as a single line: type and first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def check_plugin(plugin: Any) -> None:
    """Raise ValueError when `plugin` breaks the contract of nnvis_core.Plugin."""
    if not isinstance(plugin, Plugin):
        raise ValueError(f"{plugin!r} is not an instance of nnvis_core.Plugin")
    for attr in ("name", "title", "description"):
        value = getattr(plugin, attr, None)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{type(plugin).__name__} must set a non-empty string '{attr}'")
    if not _NAME.match(plugin.name):
        raise ValueError(f"plugin name {plugin.name!r} must match {_NAME.pattern}")
    if not isinstance(plugin.scope, Scope):
        raise ValueError(f"plugin {plugin.name}: scope must be a nnvis_core.Scope")
    if plugin.api_version != PLUGIN_API_VERSION:
        raise ValueError(
            f"plugin {plugin.name} targets plugin API {plugin.api_version}, "
            f"this nnvis provides {PLUGIN_API_VERSION}"
        )
    names = [p.name for p in plugin.params]
    if len(set(names)) != len(names):
        raise ValueError(f"plugin {plugin.name} declares a parameter twice")


def _entry_points() -> list[metadata.EntryPoint]:
    seen: set[tuple[str, str]] = set()
    result = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else ""
        if (ep.name, dist) not in seen:
            seen.add((ep.name, dist))
            result.append(ep)
    return sorted(result, key=lambda ep: ep.name)


def _origins(pm: pluggy.PluginManager) -> dict[str, Origin]:
    origins = {}
    for plugin, dist in pm.list_plugin_distinfo():
        name = pm.get_name(plugin)
        origins[name] = Origin(getattr(plugin, "__name__", name), dist.project_name, dist.version)
    return origins


def load_registry(
    use_entry_points: bool = True,
    extra: Iterable[tuple[str, object]] = (),
    strict: bool = False,
) -> Registry:
    """Load every plugin module and collect the plugins and model sources they register.

    extra: (name, module-or-object) pairs registered directly, for tests and
    embedding. strict: raise RegistryError on the first failure instead of skipping.
    """
    registry = Registry()
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)

    def fail(name: str, distribution: str, message: str) -> None:
        if strict:
            raise RegistryError(f"plugin {name} ({distribution}): {message}")
        registry.failures.append(LoadFailure(name, distribution, message))

    if use_entry_points:
        for ep in _entry_points():
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=ep.name)
            except Exception as error:  # noqa: BLE001 - any plugin failure is isolated
                fail(ep.name, ep.dist.name if ep.dist else "?", one_line(error))
    for name, obj in extra:
        try:
            pm.register(obj, name=name)
        except Exception as error:  # noqa: BLE001
            fail(name, "(registered directly)", one_line(error))

    origins = _origins(pm)
    while True:  # hooks that match no hookspec (a misspelled hook name) make the plugin unusable
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as error:
            name = pm.get_name(error.plugin) or "?"
            origin = origins.get(name)
            pm.unregister(error.plugin)
            fail(name, origin.distribution if origin else "(registered directly)", one_line(error))

    def collect(hook_name: str, into: dict[str, Registered], check: Callable[[Any], None]) -> None:
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            origin = origins.get(
                impl.plugin_name,
                Origin(getattr(impl.plugin, "__name__", impl.plugin_name), "(registered directly)", ""),
            )

            def register(item: Any, origin: Origin = origin) -> None:
                check(item)
                name = item.name
                if name in into:
                    raise ValueError(
                        f"name {name!r} is registered by both {into[name].origin} "
                        f"({into[name].origin.module}) and {origin} ({origin.module})"
                    )
                into[name] = Registered(item, origin)

            try:
                impl.function(register=register)
            except Exception as error:  # noqa: BLE001
                fail(impl.plugin_name, origin.distribution, one_line(error))

    from nnvis_core.models.sources import check_model_source

    collect("nnvis_register_model_sources", registry.model_sources, check_model_source)
    collect("nnvis_register_plugins", registry.plugins, check_plugin)
    return registry
