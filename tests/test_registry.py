"""The registry finds plugins through entry points and isolates broken ones."""

from __future__ import annotations

import types

import pytest

from nnvis_core import Plugin, Scope, hookimpl
from nnvis_core.registry import RegistryError, load_registry


def test_builtins_come_through_the_entry_point_group():
    registry = load_registry()
    assert "saliency" in registry.plugins
    origin = registry.plugins["saliency"].origin
    assert origin.distribution == "nnvis"
    assert origin.module == "nnvis_plugins.saliency"
    assert {"demo", "torchvision", "file"} <= set(registry.model_sources)
    assert registry.failures == []


def test_nothing_without_entry_points():
    registry = load_registry(use_entry_points=False)
    assert registry.plugins == {} and registry.model_sources == {}


PLUGIN_MODULE = """
from nnvis_core import Plugin, Scope, hookimpl, Text

class Hello(Plugin):
    name = "{name}"
    title = "Hello"
    description = "Says hello."
    scope = Scope.MODEL
    def run_model(self, ctx, params):
        return [Text("hello", "hello")]

@hookimpl
def nnvis_register_plugins(register):
    register(Hello())
"""


def test_a_module_that_fails_to_import_is_skipped_and_reported(fake_distribution):
    fake_distribution("broken-dist", {"broken": "fakeplug_missing_module"})
    fake_distribution("good-dist", {"good": "fakeplug_good"},
                      {"fakeplug_good.py": PLUGIN_MODULE.format(name="hello")})
    registry = load_registry()
    assert "hello" in registry.plugins and "saliency" in registry.plugins
    assert registry.plugins["hello"].origin.distribution == "good-dist"
    [failure] = registry.failures
    assert failure.name == "broken" and failure.distribution == "broken-dist"
    assert "ModuleNotFoundError" in failure.error and "\n" not in failure.error


def test_a_module_with_an_invalid_hook_fails_registration(fake_distribution):
    fake_distribution("typo-dist", {"typo": "fakeplug_typo"}, {"fakeplug_typo.py": """
        from nnvis_core import hookimpl
        @hookimpl
        def nnvis_register_plugin(register):  # misspelled hook name
            pass
    """})
    registry = load_registry()
    [failure] = registry.failures
    assert failure.distribution == "typo-dist" and "nnvis_register_plugin" in failure.error
    assert "saliency" in registry.plugins


def test_a_register_hook_that_raises_is_isolated():
    class Boom:
        @hookimpl
        def nnvis_register_plugins(self, register):
            raise RuntimeError("exploded\nsecond line")

    registry = load_registry(extra=[("boom", Boom())])
    assert "saliency" in registry.plugins
    [failure] = registry.failures
    assert failure.name == "boom" and failure.error == "RuntimeError: exploded"


def _registering(plugin):
    return types.SimpleNamespace(nnvis_register_plugins=hookimpl(lambda register: register(plugin)))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: object(), "not an instance of nnvis_core.Plugin"),
        (lambda: type("NoTitle", (Plugin,), {"name": "x", "title": "", "description": "d"})(), "'title'"),
        (lambda: type("BadName", (Plugin,), {"name": "Bad Name", "title": "t", "description": "d"})(), "must match"),
        (lambda: type("Future", (Plugin,), {"name": "future", "title": "t", "description": "d",
                                            "api_version": 99})(), "plugin API 99"),
        (lambda: type("Scopeless", (Plugin,), {"name": "s", "title": "t", "description": "d",
                                               "scope": "image"})(), "scope"),
    ],
)
def test_plugins_breaking_the_contract_are_rejected(make, message):
    registry = load_registry(use_entry_points=False, extra=[("bad", _registering(make()))])
    assert registry.plugins == {}
    [failure] = registry.failures
    assert message in failure.error


def test_duplicate_names_name_both_sources(fake_distribution):
    fake_distribution("first-dist", {"one": "fakeplug_one"}, {"fakeplug_one.py": PLUGIN_MODULE.format(name="same")})
    fake_distribution("second-dist", {"two": "fakeplug_two"}, {"fakeplug_two.py": PLUGIN_MODULE.format(name="same")})
    registry = load_registry()
    assert registry.plugins["same"].origin.distribution == "first-dist"
    [failure] = registry.failures
    assert "first-dist" in failure.error and "second-dist" in failure.error


def test_strict_mode_raises(fake_distribution):
    fake_distribution("broken-dist", {"broken": "fakeplug_missing_module"})
    with pytest.raises(RegistryError, match="broken-dist"):
        load_registry(strict=True)


def test_a_valid_plugin_object_registers_directly():
    class Direct(Plugin):
        name = "direct"
        title = "Direct"
        description = "Registered without an entry point."
        scope = Scope.MODEL

    registry = load_registry(use_entry_points=False, extra=[("direct", _registering(Direct()))])
    assert isinstance(registry.plugin("direct"), Direct)
    assert registry.plugins["direct"].origin.distribution == "(registered directly)"
