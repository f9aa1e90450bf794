"""The documentation keeps up with the code."""

from __future__ import annotations

import inspect
import json
from importlib import resources
from pathlib import Path

from nnvis_core import artifacts, hookspecs

ROOT = Path(__file__).resolve().parents[1]


def test_every_hook_is_documented_in_the_guide_and_the_hookspec():
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("nnvis_")]
    assert hooks, "no hooks found"
    for name in hooks:
        assert f"### `{name}(" in guide, f"docs/plugins.md lacks a section for {name}"
        assert len(inspect.getdoc(getattr(hookspecs, name)) or "") > 40, f"{name} has no real docstring"


def test_every_artifact_type_is_documented():
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    for cls in artifacts.ARTIFACT_TYPES:
        assert f"`{cls.__name__}(" in guide


def test_every_top_level_key_of_the_schema_is_documented():
    schema = json.loads(resources.files("nnvis_reports").joinpath("report.schema.json").read_text())
    text = (ROOT / "docs" / "report-format.md").read_text(encoding="utf-8")
    for key in schema["properties"]:
        assert f"| `{key}` |" in text, key
    for kind in schema["$defs"]["artifact"]["properties"]["kind"]["enum"]:
        assert f"| `{kind}` |" in text, kind
