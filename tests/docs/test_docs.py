"""The documentation keeps up with the code."""

from __future__ import annotations

import inspect
import json
import re
from importlib import resources
from pathlib import Path

import torch

from nnvis_core import toolkit
from nnvis_core.contract import artifacts, hookspecs

ROOT = Path(__file__).resolve().parents[2]


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


def test_every_public_name_of_the_toolkit_is_in_the_guide():
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    reference = guide.split("## Plugin API version 2: the method toolkit", 1)[1].split("\n## ", 1)[0]
    for name in toolkit.__all__:
        assert re.search(rf"`{name}[`(]", reference), f"docs/plugins.md does not document nnvis_core.toolkit.{name}"


def test_the_rise_walkthrough_quotes_the_example_package():
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    walkthrough = guide.split("### Worked example: RISE as a package", 1)[1].split("\n## ", 1)[0]
    package = ROOT / "examples" / "nnvis-plugin-rise"
    source = {line.strip() for path in (package / "nnvis_rise" / "__init__.py", package / "tests" / "test_rise.py")
              for line in path.read_text(encoding="utf-8").splitlines()}
    blocks = re.findall(r"```python\n(.*?)```", walkthrough, re.S)
    assert len(blocks) >= 3
    for block in blocks:
        for line in block.splitlines():
            if line.strip() and line.strip() != "...":
                assert line.strip() in source, f"the guide quotes a line the RISE package does not have: {line}"


def _batch_summary(ctx, batch, scale):
    """A module-level batch function, as map_batches requires."""
    return [type(item).__name__ for item in batch], scale * torch.stack([item.tensor for item in batch]).shape[0]


def test_the_guide_names_map_batches_import_and_what_a_batch_holds(tmp_path):
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    line = "from nnvis_core.contract.stream import map_batches, only, shared_store"
    assert line in guide
    namespace: dict = {}
    exec(line, namespace)  # the documented import works
    assert "A `batch` is a plain `list` of `ImageItem`s" in guide
    assert "torch.stack([item.tensor for item in batch]).to(ctx.device)" in guide

    from nnvis_core.testing import demo_items

    ctx, items = demo_items(tmp_path, images=5)
    ctx.batch_size = 2
    answers = list(namespace["map_batches"](ctx, items, _batch_summary, 10))
    assert [kinds for kinds, _ in answers] == [["ImageItem"] * 2, ["ImageItem"] * 2, ["ImageItem"]]
    assert [count for _, count in answers] == [20, 20, 10]


def test_every_trust_metric_is_documented_with_its_direction():
    """docs/metrics.md's table lists each metric of the catalog with the direction the leaderboard uses, and
    a section of its own names it."""
    from nnvis_core.metrics.suite import METRICS

    text = (ROOT / "docs" / "metrics.md").read_text()
    for metric in METRICS:
        row = next((line for line in text.splitlines() if line.startswith(f"| `{metric.name}` ")), None)
        assert row is not None, f"{metric.name}: no row in docs/metrics.md's table"
        assert f"| {metric.category} | {metric.better} |" in row, row
        assert any(line.startswith("### ") and f"`{metric.name}`" in line for line in text.splitlines()), metric.name
