"""The registry finds plugins through entry points and isolates broken ones."""

from __future__ import annotations

import types

import pytest

from nnvis_core import Plugin, Scope, hookimpl
from nnvis_core.run.registry import RegistryError, load_registry


def test_builtins_come_through_the_entry_point_group():
    registry = load_registry()
    assert "saliency" in registry.plugins
    origin = registry.plugins["saliency"].origin
    assert origin.distribution == "nnvis"
    assert origin.module == "nnvis_plugins.attribution.saliency"
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


# --- load-time isolation: each case is listed by `nnvis plugins` with its cause and skipped --------

def _listing() -> tuple[int, dict[str, str], str]:
    from click.testing import CliRunner

    from nnvis_cli.main import cli

    result = CliRunner().invoke(cli, ["plugins"])
    rows = {line.split()[0]: line for line in result.output.splitlines() if line and not line.startswith(" ")}
    return result.exit_code, rows, result.output


def test_an_api_version_mismatch_is_listed_with_the_cause(fake_distribution):
    fake_distribution("nnvis-plugin-future", {"future": "fakeplug_future"}, {"fakeplug_future.py": """
        from nnvis_core import Plugin, hookimpl

        class Future(Plugin):
            name = "future"
            title = "Future"
            description = "Written for a later plugin API."
            api_version = 3

            def run_image(self, ctx, item, params):
                return []

        @hookimpl
        def nnvis_register_plugins(register):
            register(Future())
    """})
    code, rows, _ = _listing()
    assert code == 0
    assert "nnvis-plugin-future" in rows["future"]
    assert "failed: plugin future targets plugin API 3, this nnvis runs versions 1, 2" in rows["future"]
    assert "future" not in load_registry().plugins


def test_a_declared_dependency_that_is_not_installed_is_named(fake_distribution):
    fake_distribution("nnvis-plugin-needy", {"needy": "fakeplug_needy"},
                      {"fakeplug_needy.py": PLUGIN_MODULE.format(name="needy")},
                      requires=("nnvis>=0.1", "nnvis-absent-dependency>=2", "another-absent; extra == 'test'"))
    registry = load_registry()
    assert "needy" not in registry.plugins and "fakeplug_needy" not in __import__("sys").modules
    [failure] = registry.failures
    assert failure.error == ("missing dependency: nnvis-absent-dependency>=2 (required by nnvis-plugin-needy; "
                             "pip install 'nnvis-absent-dependency>=2')")
    _, rows, _ = _listing()
    assert "failed: missing dependency: nnvis-absent-dependency>=2" in rows["needy"]


def test_a_module_importing_an_absent_library_is_a_missing_dependency(fake_distribution):
    fake_distribution("nnvis-plugin-timm", {"timmish": "fakeplug_timmish"},
                      {"fakeplug_timmish.py": "import absent_library_for_nnvis_tests\n"})
    [failure] = load_registry().failures
    assert failure.error.startswith("missing dependency: module 'absent_library_for_nnvis_tests' is not installed")
    _, rows, _ = _listing()
    assert "nnvis-plugin-timm" in rows["timmish"] and "missing dependency" in rows["timmish"]


def test_an_import_error_in_the_plugin_module_is_listed(fake_distribution):
    fake_distribution("nnvis-plugin-typo", {"typo": "fakeplug_syntax"}, {"fakeplug_syntax.py": "def broken(:\n"})
    code, rows, output = _listing()
    assert code == 0 and "failed: SyntaxError" in rows["typo"] and "nnvis-plugin-typo" in rows["typo"]
    assert rows["saliency"].endswith("ok") and "model sources:" in output


def test_strict_listing_exits_1_when_a_plugin_failed(fake_distribution):
    from click.testing import CliRunner

    from nnvis_cli.main import cli

    assert CliRunner().invoke(cli, ["plugins", "--strict"]).exit_code == 0
    fake_distribution("broken-dist", {"broken": "fakeplug_missing_module"})
    result = CliRunner().invoke(cli, ["plugins", "--strict"])
    assert result.exit_code == 1 and "cannot import fakeplug_missing_module" in result.output


def test_a_third_party_plugin_cannot_take_a_built_in_name(fake_distribution):
    # entry point "aaa" sorts before every built-in, and still loses: built-ins load first
    fake_distribution("nnvis-plugin-impostor", {"aaa": "fakeplug_impostor"},
                      {"fakeplug_impostor.py": PLUGIN_MODULE.format(name="saliency")})
    registry = load_registry()
    assert registry.plugins["saliency"].origin.distribution == "nnvis"
    [failure] = registry.failures
    assert failure.name == "saliency" and failure.distribution == "nnvis-plugin-impostor"
    assert failure.error.startswith("name 'saliency' is registered by both nnvis ")
    assert "(nnvis_plugins.attribution.saliency), which keeps it, and nnvis-plugin-impostor 1.0 (fakeplug_impostor), " \
           "which is skipped: uninstall one of them" in failure.error


def test_one_bad_registration_does_not_stop_the_modules_others():
    good = type("Good", (Plugin,), {"name": "good", "title": "t", "description": "d"})()
    bad = type("Bad", (Plugin,), {"name": "bad", "title": "t", "description": "d", "api_version": 7})()
    holder = types.SimpleNamespace(nnvis_register_plugins=hookimpl(lambda register: [register(bad), register(good)]))
    registry = load_registry(use_entry_points=False, extra=[("pair", holder)])
    assert list(registry.plugins) == ["good"]
    [failure] = registry.failures
    assert failure.name == "bad" and "plugin API 7" in failure.error


def test_params_must_be_param_objects():
    odd = type("Odd", (Plugin,), {"name": "odd", "title": "t", "description": "d", "params": (("x", int, 1),)})()
    registry = load_registry(use_entry_points=False, extra=[("odd", _registering(odd))])
    [failure] = registry.failures
    assert "params must hold nnvis_core.Param" in failure.error


def test_asking_for_a_plugin_that_did_not_load_gives_its_cause(fake_distribution, few_demo_images, tmp_path):
    from click.testing import CliRunner

    from nnvis_cli.main import cli

    fake_distribution("nnvis-plugin-needy", {"needy": "fakeplug_needy"},
                      {"fakeplug_needy.py": PLUGIN_MODULE.format(name="needy")}, requires=("nnvis-absent-lib",))
    result = CliRunner().invoke(cli, ["report", str(few_demo_images), "-o", str(tmp_path / "out"),
                                      "--plugins", "needy"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "nnvis: error: plugin needy (nnvis-plugin-needy) did not load: missing dependency: nnvis-absent-lib "
        "(required by nnvis-plugin-needy; pip install 'nnvis-absent-lib')")
