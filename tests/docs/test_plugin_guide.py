"""docs/plugins.md keeps up with the code, and its tutorial works when followed to the letter."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import pip_install_offline, run_nnvis

from nnvis_cli.scaffold import write_plugin_package
from nnvis_core import Param, Plugin, testing
from nnvis_core.contract import artifacts, hookspecs
from nnvis_core.contract.context import ImageItem, RunContext
from nnvis_core.models import ModelOptions, ModelSource
from nnvis_reports.reader import read_report

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")


def squash(text: str) -> str:
    return " ".join(text.split())


def section(heading: str) -> str:
    """The guide's text under a `### heading` line, up to the next heading."""
    match = re.search(rf"^### {re.escape(heading)}\n(.*?)(?=^#)", GUIDE, re.S | re.M)
    assert match, f"docs/plugins.md has no section '### {heading}'"
    return match.group(1)


def hooks() -> dict[str, object]:
    return {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("nnvis_")}


@pytest.mark.parametrize("name", sorted(hooks()))
def test_each_hook_section_quotes_the_hookspec_docstring(name):
    function = hooks()[name]
    [argument] = inspect.signature(function).parameters
    text = section(f"`{name}({argument})`")
    assert squash(inspect.getdoc(function)) in squash(text), \
        f"docs/plugins.md section of {name} differs from its docstring"


def test_no_section_documents_a_hook_that_does_not_exist():
    documented = set(re.findall(r"^### `(nnvis_\w+)\(", GUIDE, re.M))
    assert documented == set(hooks())


def _literal(value) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def dataclass_signature(cls) -> str:
    """`Name(a, b, c=default)` from the dataclass fields, leaving out the shared keyword `caption`."""
    parts = []
    for field in dataclasses.fields(cls):
        if field.name == "caption":
            continue
        parts.append(field.name if field.default is dataclasses.MISSING else f"{field.name}={_literal(field.default)}")
    return f"`{cls.__name__}({', '.join(parts)})`"


@pytest.mark.parametrize("cls", artifacts.ARTIFACT_TYPES, ids=lambda cls: cls.__name__)
def test_artifact_signatures_match_their_dataclasses(cls):
    assert dataclass_signature(cls) in section("Artifacts")


def test_param_signature_matches():
    assert dataclass_signature(Param) in section("Parameters")


def test_every_plugin_attribute_is_in_the_table():
    table = section("The plugin class")
    for name in Plugin.__annotations__:
        assert f"| `{name}` |" in table, name


def _public(cls) -> list[str]:
    names = [f.name for f in dataclasses.fields(cls)]
    names += [n for n, v in vars(cls).items() if not n.startswith("_") and (callable(v) or isinstance(v, property))]
    return names


@pytest.mark.parametrize("cls, prefix", [(RunContext, "ctx"), (ImageItem, "item")])
def test_what_a_run_method_receives_is_all_documented(cls, prefix):
    text = section("What a run method receives")
    for name in _public(cls):
        assert f"`{prefix}.{name}" in text, f"{prefix}.{name}"


def test_model_source_members_and_options_are_documented():
    text = section("Model sources")
    for name in ("name", "description", "load"):
        assert hasattr(ModelSource, name) or name in ModelSource.__annotations__
        assert f"| `{name}" in text
    for field in dataclasses.fields(ModelOptions):
        assert f"`{field.name}`" in text, field.name


def plain_signature(function) -> str:
    parts, keyword_only = [], False
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and not keyword_only:
            parts.append("*")
            keyword_only = True
        default = parameter.default
        parts.append(parameter.name if default is inspect.Parameter.empty else f"{parameter.name}={default!r}")
    return f"`{function.__name__}({', '.join(parts)})`"


@pytest.mark.parametrize("name", ["check_plugin", "check_declaration", "check_installed", "demo_items",
                                  "write_demo_images"])
def test_the_test_kit_functions_are_documented_with_their_signatures(name):
    assert plain_signature(getattr(testing, name)) in GUIDE


def test_the_test_kit_table_lists_every_public_function():
    public = [n for n, f in inspect.getmembers(testing, inspect.isfunction)
              if f.__module__ == testing.__name__ and not n.startswith("_")]
    for name in public:
        assert re.search(rf"`{name}\(", GUIDE), name


# --- the tutorial ------------------------------------------------------------------------------


def tutorial_files() -> dict[str, str]:
    return dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", GUIDE, re.S))


def tutorial_commands() -> list[str]:
    [block] = re.findall(r"<!-- commands -->\n```\n(.*?)```", GUIDE, re.S)
    return [line for line in block.splitlines() if line.strip()]


def test_the_files_shown_are_the_files_nnvis_plugins_new_writes(tmp_path):
    root = write_plugin_package("brightness", tmp_path)
    shown = tutorial_files()
    assert len(shown) == 3
    for relpath, text in shown.items():
        assert (tmp_path / relpath).read_text(encoding="utf-8") == text, relpath
    assert root.name == "nnvis-plugin-brightness"


def test_following_the_tutorial_gets_a_plugin_into_a_report(tmp_path):
    """Each command of the tutorial, run in an empty folder. `pip install -e` becomes an offline
    install into a folder of its own (the test venv stays clean); everything else runs as written."""
    workdir = tmp_path / "user"
    workdir.mkdir()
    env = dict(__import__("os").environ)
    outputs = []
    for line in tutorial_commands():
        words = shlex.split(line)
        if words[0] == "nnvis":
            result = run_nnvis(env, *words[1:], cwd=workdir)
        elif words[:3] == ["pip", "install", "-e"]:
            source = workdir / re.sub(r"\[.*\]$", "", words[3])
            env = pip_install_offline([source], tmp_path / "install")
            continue
        elif words[:3] == ["python", "-m", "pytest"]:
            result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *words[3:]],
                                    cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
        else:
            raise AssertionError(f"the tutorial uses a command this test does not know: {line}")
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        outputs.append((line, result.stdout))

    listing = dict(outputs)["nnvis plugins"]
    row = next(r for r in listing.splitlines() if r.startswith("brightness"))
    assert "nnvis-plugin-brightness 0.1.0" in row and row.endswith("ok")
    assert "3 passed" in dict(outputs)["python -m pytest nnvis-plugin-brightness"]

    report = read_report(workdir / "brightness-report")
    assert [p["name"] for p in report["plugins"]] == ["saliency", "brightness"]
    assert report["plugins"][1]["params"] == {"gamma": 2.0} and report["input"]["readable"] == 16
    assert all(image["results"]["brightness"]["status"] == "ok" for image in report["images"])
    assert "Brightness" in (workdir / "brightness-report" / "index.html").read_text(encoding="utf-8")
