"""Reading report.json back: either schema version, as a whole or one model at a time.

Schema 2 keeps each model's results in its own `by_model[]` section, in the shape
a one-model report had at the top level in schema 1 (`model`, `plugins`,
`skipped_plugins`, `images`, `dataset`, `model_results`). `model_view` lays one
section over the shared keys, which gives that flat shape back: the page's
templates, the leaderboard and most readers want one model at a time.

    report = read_report(folder)          # schema 2, whatever version the file has
    view = model_view(report, 0)          # report["images"][i]["results"] for the first model
"""

from __future__ import annotations

import json
from pathlib import Path

SECTION_KEYS = ("model", "plugins", "skipped_plugins", "images", "dataset", "model_results")


class ReportReadError(Exception):
    """A file that is not an nnvis report.json of a known schema version (one line)."""


def upgrade(report: dict) -> dict:
    """A schema 1 report in the schema 2 shape (a schema 2 report is returned as it is)."""
    version = report.get("schema_version")
    if version == 2:
        return report
    if version != 1:
        raise ReportReadError(f"unknown report schema version {version!r} (this nnvis reads 1 and 2)")
    section = {key: report.get(key, [] if key in ("skipped_plugins", "plugins", "images") else {})
               for key in SECTION_KEYS}
    shared = {key: value for key, value in report.items() if key not in SECTION_KEYS}
    return {**shared, "schema_version": 2, "models": [section["model"]], "by_model": [section]}


def model_view(report: dict, model: int = 0) -> dict:
    """The report as if `model` (an index into `models`) were its only model: the shared keys,
    that model's section at the top level, and its leaderboard rows."""
    report = upgrade(report)
    sections = report["by_model"]
    if not 0 <= model < len(sections):
        raise IndexError(f"the report has {len(sections)} models; no model {model}")
    view = {key: value for key, value in report.items() if key != "by_model"}
    view.update(sections[model])
    view["model_index"] = model
    if "leaderboard" in report:
        label = model_label(report, model)
        view["leaderboard"] = [row for row in report["leaderboard"] if row.get("model") == label]
    return view


def model_label(report: dict, model: int) -> str:
    """The name the page and the leaderboard show for a model: its `label`, else its name."""
    described = upgrade(report)["models"][model]
    return described.get("label") or described["name"]


def read_report(folder: Path, model: int | None = 0) -> dict:
    """report.json of a report folder: the flat view of one model (default: the first), or with
    model=None the whole report in the schema 2 shape."""
    path = Path(folder) / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ReportReadError(f"{path}: cannot read the report ({error})") from None
    report = upgrade(report)
    return report if model is None else model_view(report, model)
