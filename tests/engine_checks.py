"""What the engine tests share: the built-ins to run cheaply, and report.json compared across engines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nnvis_core.config import ReportConfig
from nnvis_core.registry import load_registry
from nnvis_core.runner import prepare_all

# Every built-in that computes per image (where the engines differ) and applies to the demo net,
# with the optimizing ones cut short; t-SNE as a dataset-scope plugin beside them.
RENDERED = re.compile(r"\d+ rendered now, \d+ reused")
CHEAP = {"semantic_dictionary": {"steps": 8}, "texture_synthesis": {"steps": 4},
         "feature_inversion": {"steps": 4}, "smoothgrad": {"samples": 4}, "integrated_gradients": {"steps": 8},
         "tsne": {"perplexity": 1.0}}


def image_scope_builtins(images: Path, out: Path) -> list[str]:
    """The built-ins that compute per image and apply to the demo net, as `--plugins all` picks them."""
    registry = load_registry()
    [plan] = prepare_all(ReportConfig(images, out, plugins=["all"]), registry)
    return sorted(run.plugin.name for run in plan.image_runs
                  if registry.plugins[run.plugin.name].origin.distribution == "nnvis")


def comparable(out: Path) -> dict:
    """report.json without timings and the engine's own fields."""
    from conftest import without_timings

    report = without_timings(json.loads((out / "report.json").read_text(encoding="utf-8")))
    report.pop("engine")
    return report


def assert_same_numbers(a, b, where: str = "") -> None:
    """Equal structure and text; numbers equal up to float rounding."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_numbers(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_numbers(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-3, abs=1e-4), where
    elif isinstance(a, str) and isinstance(b, str):
        # how many feature visualizations a process drew itself and how many it found in the
        # on-disk cache depends on which process saw which image first: provenance, not result
        assert RENDERED.sub("", a) == RENDERED.sub("", b), where
    else:
        assert a == b, where
