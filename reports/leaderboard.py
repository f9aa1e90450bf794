"""The method leaderboard: one row per model and attribution method, the figures that say which to trust.

Every row is computed from the report itself (report.json's `plugins`, `images`
and `dataset`), so it needs no plugin code and reads a third party's method like a
built-in: a method is any image plugin the run marked `attribution`. Its figures
are means over the images where the method succeeded:

- deletion and insertion AUCs (Petsiuk et al. 2018: the class probability as the
  map's most important pixels are turned black, or revealed on a blurred copy of the image);
- mask share and gain, where masks were given (the map's positive mass on the object,
  and that share over the object's area);
- the sanity check's final rank correlation (Adebayo et al. 2018: the map's Spearman
  correlation with the trained model's map once every layer is re-initialised) and
  its reading: pass when it falls below SANITY_PASS_BELOW;
- seconds per image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SANITY_PASS_BELOW = 0.5
# The sanity check's built-in "gradient" method draws the saliency card's map.
SANITY_NAMES = {"gradient": "saliency"}
SANITY_SUFFIX = "_final_spearman"


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    better: str  # "lower" or "higher"
    meaning: str


COLUMNS = (
    Column("deletion_auc", "deletion AUC", "lower",
           "class probability as the most important pixels are removed first, averaged over the curve"),
    Column("insertion_auc", "insertion AUC", "higher",
           "class probability as the most important pixels are revealed first on a blurred copy"),
    Column("mask_share", "mass on object", "higher", "share of the map's positive mass inside the object mask"),
    Column("mask_gain", "mask gain", "higher", "mass on the object over the object's share of the image (1: chance)"),
    Column("sanity_spearman", "sanity rank corr.", "lower",
           f"rank correlation with the trained model's map once every layer is random; pass below "
           f"{SANITY_PASS_BELOW:g}"),
    Column("seconds_per_image", "s / image", "lower", "mean time of one call"),
)


def sanity_by_method(report: Mapping[str, Any]) -> dict[str, float]:
    """{method: final rank correlation} from the sanity check's metrics, when it ran and succeeded."""
    sanity = (report.get("dataset") or {}).get("sanity_check")
    if not sanity or sanity.get("status") != "ok":
        return {}
    found = {}
    for key, value in sanity["metrics"].items():
        if key.endswith(SANITY_SUFFIX):
            method = key[: -len(SANITY_SUFFIX)]
            found[SANITY_NAMES.get(method, method)] = float(value)
    return found


class _Tally:
    """One method's results, added up image by image: the report's images may be read from disk one at
    a time (nnvis_reports.image_store), so nothing is kept per image. Sums run in image order, so each
    mean is the one sum(values) / len(values) gives."""

    def __init__(self) -> None:
        self.ok = 0
        self.failures = 0
        self.degenerate = 0  # ok results that show nothing (a zero or constant map)
        self.sums: dict[str, list] = {}  # column key -> [total, count]

    def add(self, result: dict) -> None:
        if result["status"] != "ok":
            self.failures += 1
            return
        self.ok += 1
        self.degenerate += bool(result.get("degenerate"))
        for key, value in (("seconds_per_image", result["seconds"]), *result["metrics"].items()):
            total = self.sums.setdefault(key, [0, 0])
            total[0] += value
            total[1] += 1

    def mean(self, key: str) -> float | None:
        total, count = self.sums.get(key, (0, 0))
        return total / count if count else None


def leaderboard(report: Mapping[str, Any]) -> list[dict]:
    """One row per attribution method of one model, in the order the methods ran (`report` is
    one model's view, nnvis_reports.reader.model_view)."""
    model = report["model"].get("label") or report["model"]["name"]
    sanity = sanity_by_method(report)
    tallies = {plugin["name"]: _Tally() for plugin in report["plugins"] if plugin.get("attribution")}
    for image in report["images"]:
        for name, tally in tallies.items():
            if name in image["results"]:
                tally.add(image["results"][name])
    rows = []
    for plugin in report["plugins"]:
        if plugin["name"] not in tallies:
            continue
        name, tally = plugin["name"], tallies[plugin["name"]]
        row: dict[str, Any] = {"model": model, "method": name, "title": plugin["title"], "images": tally.ok,
                               "failures": tally.failures, "degenerate": tally.degenerate}
        for column in COLUMNS:
            row[column.key] = sanity.get(name) if column.key == "sanity_spearman" else tally.mean(column.key)
        spearman = row["sanity_spearman"]
        row["sanity"] = None if spearman is None else ("pass" if spearman < SANITY_PASS_BELOW else "fail")
        rows.append(row)
    return rows


def best(rows: list[dict]) -> dict[str, float]:
    """{column key: the best value any row has}, for the columns where at least two rows have a value."""
    marked = {}
    for column in COLUMNS:
        values = [row[column.key] for row in rows if row.get(column.key) is not None]
        if len(values) >= 2:
            marked[column.key] = min(values) if column.better == "lower" else max(values)
    return marked
