"""What a notebook shows: the report, one part of it, or one result's card, each drawn by the
report's own templates (nnvis_reports.inline) and set in a sandboxed frame."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from nnvis_core.contract.artifacts import Result
from nnvis_core.contract.conformance import degenerate_reasons
from nnvis_reports.assets import save_artifact
from nnvis_reports.inline import result_document

# The parts Run.show draws, with the height of their frame (px).
PARTS = {"page": 900, "leaderboard": 700, "folder": 700, "matrix": 800, "dataset": 900, "model": 900}
CARD_HEIGHT = 480  # px: one result's card


class Shown:
    """Something shown inline in a notebook (its HTML is made when asked for)."""

    def __init__(self, make: Callable[[], str]) -> None:
        self._make = make

    def _repr_html_(self) -> str:
        return self._make()


class Leaderboard(list):
    """The leaderboard rows (dicts), shown in a notebook as the report's sortable table."""

    def __init__(self, rows: list[dict], shown: Shown):
        super().__init__(rows)
        self._shown = shown

    def _repr_html_(self) -> str:
        return self._shown._repr_html_()


def framed(page: str, height: int = 900) -> str:
    """A page in a sandboxed frame: scripts run in it, but cannot reach the notebook."""
    return (f'<iframe class="nnvis-report" sandbox="allow-scripts" style="width: 100%; height: {height}px; '
            f'border: 1px solid #ddd" srcdoc="{html.escape(page, quote=True)}"></iframe>')


def result_html(result: Result, pixels: np.ndarray | None, plugin: dict) -> str:
    """One result drawn as the report draws its card (maps over the input with their colour bars,
    charts, tables, the metrics), in a frame; `plugin` gives its title and description."""
    with tempfile.TemporaryDirectory(prefix="nnvis-result-") as temporary:
        root = Path(temporary)
        artifacts = [save_artifact(artifact, root, f"artifact-{number}", pixels, root)
                     for number, artifact in enumerate(result.artifacts)]
        entry = {"status": "ok", "artifacts": artifacts, "metrics": {k: float(v) for k, v in result.metrics.items()},
                 "error": None, "traceback": None}
        blank = degenerate_reasons(result)
        if blank:
            entry["degenerate"] = list(blank)
        return framed(result_document(entry, plugin, root), height=CARD_HEIGHT)


def plugin_card(plugin) -> dict:
    """What a result's card says about its plugin (a Plugin object)."""
    return {"name": plugin.name, "title": plugin.title, "description": plugin.description}
