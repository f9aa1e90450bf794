"""The method x image matrix as data: its columns and one row per readable image.

The page's script (static/matrix.js) builds the table from these rows, which reach it
either inline (a JSON data island in index.html) or, for a large folder, as script
chunks beside the page (nnvis_reports.paging). Both are written from the same rows.
"""

from __future__ import annotations

import math
from typing import Iterator


def matrix_columns(views: list[dict], labels: list[str]) -> list[dict]:
    """The method columns: every model's image-scope plugins, model by model, titled with the
    model's label when there are several."""
    return [{"model": k, "plugin": plugin, "title": f"{labels[k]} · {plugin['title']}" if len(views) > 1
             else plugin["title"]}
            for k, view in enumerate(views) for plugin in view["plugins"] if plugin["scope"] == "image"]


def matrix_header(columns: list[dict], labels: list[str], better: dict[str, str]) -> dict:
    """What the script needs besides the rows: models, columns and the metrics' better directions."""
    return {"models": labels,
            "plugins": [c["plugin"]["name"] for c in columns],
            "titles": [c["title"] for c in columns],
            "attribution": [bool(c["plugin"].get("attribution", False)) for c in columns],
            "column_models": [c["model"] for c in columns],
            "better": {"keys": list(better), "directions": list(better.values())}}


def _finite_metrics(metrics: dict | None) -> dict:
    """Metrics that are finite numbers (NaN or Infinity would make the data invalid JSON)."""
    return {key: value for key, value in (metrics or {}).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def matrix_cell(result: dict | None) -> dict | None:
    """One method on one image: its status, one-line error, first picture (overlay and bare map) and metrics."""
    if result is None:
        return None
    first = result["artifacts"][0] if result.get("artifacts") else None
    return {"status": result["status"], "error": result.get("error"), "degenerate": bool(result.get("degenerate")),
            "kind": first["kind"] if first else None,
            "path": first.get("path") if first else None,
            "map_path": first.get("map_path") if first else None,
            "metrics": _finite_metrics(result.get("metrics"))}


def matrix_rows(views: list[dict], columns: list[dict]) -> Iterator[dict]:
    """One row per readable image: what each model said, the true class in each model's classes,
    and a cell per column."""
    for image in views[0]["images"]:
        if image["status"] != "ok":
            continue
        entries = [view["images"][image["index"]] for view in views]
        yield {"index": image["index"], "path": image["path"], "input": image["input"],
               "said": [entry["predictions"][0] if entry.get("predictions") else None for entry in entries],
               "truths": [entry.get("true_class") for entry in entries],
               "cells": [matrix_cell(entries[c["model"]]["results"].get(c["plugin"]["name"])) for c in columns]}
