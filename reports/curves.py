"""Deletion and insertion curves per method: the mean over the images, with a band, as small plots.

Each attribution card carries its image's curves (a chart with the series `deletion`
and `insertion`, nnvis_core.toolkit.attribution.curves_chart); the leaderboard's
AUCs are the areas under them. Averaged per method, the curves show where along the
path a method gains or loses faithfulness, which the one-number AUC hides.
"""

from __future__ import annotations

import numpy as np

SERIES = ("deletion", "insertion")


def image_curves(result: dict) -> dict | None:
    """The deletion/insertion chart of one result, or None."""
    if result.get("status") != "ok":
        return None
    for artifact in result.get("artifacts", []):
        if artifact["kind"] == "chart" and set(artifact["series"]) == set(SERIES):
            return artifact
    return None


def mean_curves(view: dict) -> list[dict]:
    """Per attribution method of one model's view: x, and for each series the mean and the band
    (mean +- one standard deviation, clipped to [0, 1]) over the images whose curves share the
    first one's x positions; methods without curves are left out."""
    found = []
    for plugin in view["plugins"]:
        if not plugin.get("attribution"):
            continue
        charts = [c for c in (image_curves(image["results"].get(plugin["name"], {})) for image in view["images"]) if c]
        charts = [c for c in charts if c["x"] == charts[0]["x"]] if charts else []
        if not charts:
            continue
        entry = {"method": plugin["name"], "title": plugin["title"], "x": charts[0]["x"], "n": len(charts)}
        for name in SERIES:
            values = np.asarray([c["series"][name] for c in charts], dtype=np.float64)
            mean, spread = values.mean(axis=0), values.std(axis=0)
            entry[name] = {"mean": mean.tolist(), "low": np.clip(mean - spread, 0, 1).tolist(),
                           "high": np.clip(mean + spread, 0, 1).tolist()}
        found.append(entry)
    return found


def curve_plot(entry: dict, width: int = 180, height: int = 120, margin: int = 18) -> dict:
    """SVG geometry of one method's plot: per series a mean polyline and a band polygon, y in [0, 1]."""
    x = entry["x"]
    low, high = min(x), max(x)
    span = (high - low) or 1.0

    def point(xv: float, yv: float) -> str:
        return f"{margin + (xv - low) / span * (width - 2 * margin):.1f},{height - margin - yv * (height - 2 * margin):.1f}"

    series = []
    for name in SERIES:
        curve = entry[name]
        band = [point(a, b) for a, b in zip(x, curve["high"])] + [point(a, b) for a, b in reversed(list(zip(x, curve["low"])))]
        series.append({"name": name, "line": " ".join(point(a, b) for a, b in zip(x, curve["mean"])),
                       "band": " ".join(band)})
    return {"width": width, "height": height, "margin": margin, "series": series}
