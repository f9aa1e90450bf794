"""Discover plugins through the `nnvis` entry-point group and collect what they register.

Each entry point is loaded on its own: one that fails to import or register is
recorded (name, distribution, one-line cause) and skipped, so a broken plugin
never takes down `nnvis plugins`, `--help` or the report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Collection, Iterable

import pluggy

from nnvis_core.contract import hookspecs
from nnvis_core.contract.params import Param
from nnvis_core.contract.plugin import PROJECT, SUPPORTED_API_VERSIONS, Plugin, Scope
from nnvis_core.models.source import check_model_source
from nnvis_core.run.sink import check_sink_factory

ENTRY_POINT_GROUP = "nnvis"
BUILTIN_DISTRIBUTION = "nnvis"
PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_REQUIREMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


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
    sinks: dict[str, Registered] = field(default_factory=dict)  # where a run's results can go (SinkFactory)
    failures: list[LoadFailure] = field(default_factory=list)

    def plugin(self, name: str) -> Plugin:
        return self.plugins[name].item


def one_line(error: BaseException) -> str:
    """The exception as a single line: type and first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def check_plugin(plugin: Any) -> None:
    """Raise ValueError when `plugin` breaks the contract of nnvis_core.Plugin (every problem, joined)."""
    problems = registration_problems(plugin)
    if problems:
        raise ValueError("; ".join(problems))


def registration_problems(plugin: Any) -> list[str]:
    """Every way `plugin` breaks the contract of nnvis_core.Plugin, empty when none.

    All of them at once, so that an author fixes a declaration in one round rather than one
    problem per run (the test kit lists them one per line)."""
    if not isinstance(plugin, Plugin):
        return [f"{plugin!r} is not an instance of nnvis_core.Plugin"]
    problems = [f"{type(plugin).__name__} must set a non-empty string '{attr}'"
                for attr in ("name", "title", "description")
                if not isinstance(getattr(plugin, attr, None), str) or not getattr(plugin, attr).strip()]
    name = plugin.name if isinstance(getattr(plugin, "name", None), str) else type(plugin).__name__
    if isinstance(getattr(plugin, "name", None), str) and plugin.name.strip() and not PLUGIN_NAME.match(plugin.name):
        problems.append(f"plugin name {plugin.name!r} must match {PLUGIN_NAME.pattern}")
    if not isinstance(plugin.scope, Scope):
        problems.append(f"plugin {name}: scope must be a nnvis_core.Scope")
    if plugin.api_version not in SUPPORTED_API_VERSIONS:
        problems.append(
            f"plugin {name} targets plugin API {plugin.api_version}, this nnvis runs versions "
            f"{', '.join(map(str, SUPPORTED_API_VERSIONS))} (install a version of one that matches the other)"
        )
    problems += [f"plugin {name}: params must hold nnvis_core.Param, got {param!r}"
                 for param in plugin.params if not isinstance(param, Param)]
    names = [p.name for p in plugin.params if isinstance(p, Param)]
    if len(set(names)) != len(names):
        problems.append(f"plugin {name} declares a parameter twice")
    try:
        plugin.check_declaration()
    except ValueError as error:
        problems.append(str(error))
    return problems


def _entry_points() -> list[metadata.EntryPoint]:
    """The `nnvis` entry points, nnvis's own first, so that no third-party plugin can
    take a built-in's name; then by distribution and entry-point name, for a stable order."""
    seen: set[tuple[str, str]] = set()
    result = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else ""
        if (ep.name, dist) not in seen:
            seen.add((ep.name, dist))
            result.append(ep)
    return sorted(result, key=lambda ep: (_distribution(ep) != BUILTIN_DISTRIBUTION, _distribution(ep), ep.name))


def _distribution(ep: metadata.EntryPoint) -> str:
    return ep.dist.name if ep.dist else "?"


def missing_requirements(distribution: metadata.Distribution | None) -> list[str]:
    """The requirements a distribution declares that are not installed.

    Only unconditional requirements are checked (a marker such as an extra or a
    Python version is left to pip), and only for presence, not for version.
    """
    missing = []
    for requirement in (distribution.requires or []) if distribution else []:
        if ";" in requirement:
            continue
        match = _REQUIREMENT_NAME.match(requirement.strip())
        if not match:
            continue
        try:
            metadata.distribution(match.group(0))
        except metadata.PackageNotFoundError:
            missing.append(requirement.strip())
    return missing


# Helper modules a version-1 plugin may have imported from the built-ins; plugin API 2 moved them.
MOVED_TO_TOOLKIT = {f"nnvis_plugins.attribution.{name}" for name in
                    ("backprop", "rules", "guard", "imaging", "faithfulness")}


def import_failure(error: BaseException, module: str) -> str:
    """One line on why a plugin module did not import, naming a missing dependency as such."""
    if isinstance(error, ModuleNotFoundError) and error.name in MOVED_TO_TOOLKIT:
        return (f"{module} imports {error.name}, which plugin API 2 moved to nnvis_core.toolkit: "
                f"import the same names from nnvis_core.toolkit")
    if isinstance(error, ModuleNotFoundError) and error.name:
        own = module.split(".")[0]
        if error.name.split(".")[0] != own:
            return f"missing dependency: module {error.name!r} is not installed ({one_line(error)})"
        return f"cannot import {module}: {one_line(error)}"
    return one_line(error)


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
    only: Collection[str] | None = None,
) -> Registry:
    """Load every plugin module and collect the plugins, model sources and sinks they register.

    extra: (name, module-or-object) pairs registered directly, for tests and
    embedding. strict: raise RegistryError on the first failure instead of skipping.
    only: load just the entry points with these names (nnvis's own come first).
    """
    registry = Registry()
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)

    def fail(name: str, distribution: str, message: str) -> None:
        if strict:
            raise RegistryError(f"plugin {name} ({distribution}): {message}")
        registry.failures.append(LoadFailure(name, distribution, message))

    if use_entry_points:
        missing_by_distribution: dict[str, list[str]] = {}
        for ep in _entry_points():
            unwanted = only is not None and ep.name not in only
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name) or unwanted:
                continue
            if _distribution(ep) not in missing_by_distribution:
                missing_by_distribution[_distribution(ep)] = missing_requirements(ep.dist)
            missing = missing_by_distribution[_distribution(ep)]
            if missing:
                fail(ep.name, _distribution(ep), f"missing dependency: {', '.join(missing)} "
                     f"(required by {_distribution(ep)}; pip install {' '.join(repr(m) for m in missing)})")
                continue
            try:
                pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=ep.name)
            except Exception as error:  # noqa: BLE001 - any plugin failure is isolated
                fail(ep.name, _distribution(ep), import_failure(error, ep.module))
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

            def register(item: Any, origin: Origin = origin, entry: str = impl.plugin_name) -> None:
                """Collect one item; a bad one is recorded and skipped, the module's others still register."""
                name = getattr(item, "name", None)
                label = name if isinstance(name, str) and name else entry
                try:
                    check(item)
                    if name in into:
                        first = into[name].origin
                        raise ValueError(
                            f"name {name!r} is registered by both {first} ({first.module}), which keeps it, "
                            f"and {origin} ({origin.module}), which is skipped: uninstall one of them"
                        )
                except Exception as error:  # noqa: BLE001 - recorded, the module's other items go on
                    fail(label, origin.distribution, str(error) if isinstance(error, ValueError) else one_line(error))
                    return
                into[name] = Registered(item, origin)

            try:
                impl.function(register=register)
            except RegistryError:
                raise
            except Exception as error:  # noqa: BLE001
                fail(impl.plugin_name, origin.distribution, one_line(error))

    collect("nnvis_register_model_sources", registry.model_sources, check_model_source)
    collect("nnvis_register_plugins", registry.plugins, check_plugin)
    collect("nnvis_register_sinks", registry.sinks, check_sink_factory)
    return registry
