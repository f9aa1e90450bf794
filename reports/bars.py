"""Where the bars of a `bars` artifact (nnvis_core.BarChart) go in the report's SVG box.

Like the line chart's geometry (render._chart_lines), the numbers are worked out here and the
template only places rectangles and text, which Jinja escapes: a label is never markup.
"""

from __future__ import annotations

from nnvis_reports.colormaps import category_colour

# Above this many labels, the labels under the axis would overlap: each bar names its label on hover.
MOST_TICK_LABELS = 24


def bar_geometry(entry: dict, width: int = 400, height: int = 240, margin: int = 36) -> dict:
    """The bars of a report.json `bars` entry as rectangles in a width x height box.

    Bars rise from zero (negative values hang below it), one group per label, the series of a
    group side by side in legend order. Returns the rectangles ({x, y, width, height, color,
    label, name, value}), the label ticks, the series with their colours, and the axis limits.
    """
    labels, series = entry["labels"], entry["series"]
    values = [v for values in series.values() for v in values]
    low, high = min(0.0, *values), max(0.0, *values)
    if high == low:
        high = low + 1.0
    group = (width - 2 * margin) / len(labels)
    bar = group * 0.8 / len(series)

    def py(y: float) -> float:
        return height - margin - (y - low) / (high - low) * (height - 2 * margin)

    colours = {name: "#%02x%02x%02x" % category_colour(i) for i, name in enumerate(series)}
    bars = []
    for number, label in enumerate(labels):
        for slot, (name, values) in enumerate(series.items()):
            value = values[number]
            top, bottom = py(max(value, 0.0)), py(min(value, 0.0))
            bars.append({"x": round(margin + number * group + group * 0.1 + slot * bar, 2), "y": round(top, 2),
                         "width": round(bar, 2), "height": round(max(bottom - top, 0.5), 2),
                         "color": colours[name], "label": label, "name": name, "value": value})
    ticks = [{"x": round(margin + (number + 0.5) * group, 2), "label": label} for number, label in enumerate(labels)]
    return {"bars": bars, "ticks": ticks if len(labels) <= MOST_TICK_LABELS else [],
            "series": [{"name": name, "color": colour} for name, colour in colours.items()],
            "low": low, "high": high, "width": width, "height": height, "margin": margin,
            "y_low": py(low), "y_high": py(high), "y_zero": py(0.0)}
