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
- the trust metrics of the run (nnvis_core.metrics, chosen with --metrics), each under
  its category, as Quantus groups them;
- seconds per image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nnvis_core.metrics import CATEGORIES, CATEGORY_MEANING
from nnvis_core.metrics.suite import METRICS

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
    group: str = "cost"  # one of GROUPS: the header the column sits under


GROUPS = (*CATEGORIES, "cost")
GROUP_MEANING = {**CATEGORY_MEANING, "cost": "what the method costs"}

COLUMNS = (  # measured by every attribution plugin and the sanity check, whatever --metrics says
    Column("deletion_auc", "deletion AUC", "lower",
           "class probability as the most important pixels are removed first, averaged over the curve",
           "faithfulness"),
    Column("insertion_auc", "insertion AUC", "higher",
           "class probability as the most important pixels are revealed first on a blurred copy", "faithfulness"),
    Column("mask_share", "mass on object", "higher", "share of the map's positive mass inside the object mask",
           "localisation"),
    Column("mask_gain", "mask gain", "higher", "mass on the object over the object's share of the image (1: chance)",
           "localisation"),
    Column("sanity_spearman", "sanity rank corr.", "lower",
           f"rank correlation with the trained model's map once every layer is random; pass below "
           f"{SANITY_PASS_BELOW:g}", "randomisation"),
    Column("seconds_per_image", "s / image", "lower", "mean time of one call"),
)
METRIC_COLUMNS = tuple(Column(m.name, m.title, m.better, m.meaning, m.category) for m in METRICS)
ALL_COLUMNS = COLUMNS + METRIC_COLUMNS
# Figures a card shows beside the leaderboard's, which rank nothing (no direction).
CARD_COLUMNS = (Column("mask_area", "object's share of the image", "", "the mask's area over the image's, what "
                       "mask gain divides by", "localisation"),)
BY_KEY = {column.key: column for column in (*ALL_COLUMNS, *CARD_COLUMNS)}
OTHER = "other"  # a plugin's own figures, which belong to no category


def metric_groups(metrics: Mapping[str, float]) -> list[tuple[str, list[tuple[Column, float]]]]:
    """One map's figures under their categories, in GROUPS order, for the card under the map: "faithful
    but noisy" reads there image by image as the leaderboard reads it per method. Figures no category
    claims come last, under OTHER, labelled by their key."""
    grouped: dict[str, list[tuple[Column, float]]] = {}
    for key, value in metrics.items():
        column = BY_KEY.get(key) or Column(key, key, "", "", OTHER)
        grouped.setdefault(column.group, []).append((column, value))
    return [(group, grouped[group]) for group in (*GROUPS, OTHER) if group in grouped]


def columns_for(rows: list[dict]) -> list[Column]:
    """The columns to show for these rows: the fixed ones, and each trust metric some row measured, grouped
    in GROUPS order."""
    shown = [*COLUMNS, *(c for c in METRIC_COLUMNS if any(row.get(c.key) is not None for row in rows))]
    return sorted(shown, key=lambda column: GROUPS.index(column.group))


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
        row.update({c.key: tally.mean(c.key) for c in METRIC_COLUMNS if tally.mean(c.key) is not None})
        spearman = row["sanity_spearman"]
        row["sanity"] = None if spearman is None else ("pass" if spearman < SANITY_PASS_BELOW else "fail")
        rows.append(row)
    return rows


def best(rows: list[dict]) -> dict[str, float]:
    """{column key: the best value any row has}, for the columns where at least two rows have a value."""
    marked = {}
    for column in columns_for(rows):
        values = [row[column.key] for row in rows if row.get(column.key) is not None]
        if len(values) >= 2:
            marked[column.key] = min(values) if column.better == "lower" else max(values)
    return marked


def category_ranks(rows: list[dict]) -> list[dict[str, float | None]]:
    """Per row, {category: its mean rank over that category's columns} among the rows of the same model
    (1: best; ties share their mean rank; a column where fewer than two rows have a value does not
    count): "faithful but noisy" at a glance. A category with no ranked column is None."""
    ranks: list[dict[str, list[float]]] = [{} for _ in rows]
    for model in dict.fromkeys(row.get("model") for row in rows):
        members = [i for i, row in enumerate(rows) if row.get("model") == model]
        for column in columns_for([rows[i] for i in members]):
            measured = [(i, rows[i][column.key]) for i in members if rows[i].get(column.key) is not None]
            if column.group == "cost" or len(measured) < 2:
                continue
            for i, value in measured:
                ahead = sum(1 for _, other in measured
                            if (other < value if column.better == "lower" else other > value))
                ties = sum(1 for _, other in measured if other == value)
                ranks[i].setdefault(column.group, []).append(ahead + (ties + 1) / 2)
    return [{group: (sum(found[group]) / len(found[group]) if group in found else None) for group in CATEGORIES}
            for found in ranks]
