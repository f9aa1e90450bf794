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
    first one's x positions; methods without curves are left out. One pass over the images,
    adding up sums and sums of squares: they may be read from disk one at a time."""
    methods = [plugin for plugin in view["plugins"] if plugin.get("attribution")]
    sums: dict[str, dict] = {}  # method -> {"x", "n", series: (sum, sum of squares)}
    for image in view["images"]:
        for plugin in methods:
            chart = image_curves(image["results"].get(plugin["name"], {}))
            if chart is None:
                continue
            found = sums.setdefault(plugin["name"], {"x": chart["x"], "n": 0})
            if chart["x"] != found["x"]:
                continue
            found["n"] += 1
            for name in SERIES:
                values = np.asarray(chart["series"][name], dtype=np.float64)
                total, squares = found.get(name, (0.0, 0.0))
                found[name] = (total + values, squares + values * values)
    entries = []
    for plugin in methods:
        found = sums.get(plugin["name"])
        if found is None:
            continue
        entry = {"method": plugin["name"], "title": plugin["title"], "x": found["x"], "n": found["n"]}
        for name in SERIES:
            total, squares = found[name]
            mean = total / found["n"]
            spread = np.sqrt(np.clip(squares / found["n"] - mean * mean, 0, None))
            entry[name] = {"mean": mean.tolist(), "low": np.clip(mean - spread, 0, 1).tolist(),
                           "high": np.clip(mean + spread, 0, 1).tolist()}
        entries.append(entry)
    return entries


def curve_plot(entry: dict, width: int = 180, height: int = 120, margin: int = 18) -> dict:
    """SVG geometry of one method's plot: per series a mean polyline and a band polygon, y in [0, 1]."""
    x = entry["x"]
    low, high = min(x), max(x)
    span = (high - low) or 1.0

    def point(xv: float, yv: float) -> str:
        x_pixel = margin + (xv - low) / span * (width - 2 * margin)
        return f"{x_pixel:.1f},{height - margin - yv * (height - 2 * margin):.1f}"

    series = []
    for name in SERIES:
        curve = entry[name]
        upper = [point(a, b) for a, b in zip(x, curve["high"])]
        band = upper + [point(a, b) for a, b in reversed(list(zip(x, curve["low"])))]
        series.append({"name": name, "line": " ".join(point(a, b) for a, b in zip(x, curve["mean"])),
                       "band": " ".join(band)})
    return {"width": width, "height": height, "margin": margin, "series": series}
