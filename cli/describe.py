"""`nnvis plugins show NAME`: one installed plugin described as plain text.

What the plugin declares (name, title, scope, description, parameters) and where
it comes from (distribution, version, module), laid out for a terminal.
"""

from __future__ import annotations

import textwrap
from typing import Any, Sequence

from nnvis_core.contract.params import Param
from nnvis_core.run.registry import Registered
from nnvis_core.toolkit.attribution import AttributionPlugin

WIDTH = 88
INDENT = "  "
MAX_CELL = 24


def format_value(value: Any) -> str:
    """A parameter value as a user writes it in `--set` (true/false for booleans, "" for an empty string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return '""'
    return str(value)


def allowed_values(param: Param) -> str:
    """The values a parameter accepts beyond its type: its choices or bounds, or '' when any value of the type."""
    if param.choices is not None:
        return "|".join(format_value(choice) for choice in param.choices)
    if param.type is bool:
        return "true|false"
    low, high = param.minimum, param.maximum
    if low is not None and high is not None:
        return f"{format_value(low)} to {format_value(high)}"
    if low is not None:
        return f">= {format_value(low)}"
    if high is not None:
        return f"<= {format_value(high)}"
    return ""


def describe_plugin(registered: Registered) -> str:
    """The text `nnvis plugins show` prints for a registered plugin.

    >>> print(describe_plugin(load_registry().plugins["saliency"]))   # doctest: +SKIP
    saliency: Gradient saliency
      scope         image
      ...
    """
    plugin, origin = registered.item, registered.origin
    attribution = isinstance(plugin, AttributionPlugin)
    facts = [
        ("scope", plugin.scope.value + (" (runs when no plugins are named)" if plugin.default_enabled else "")),
        ("attribution", "yes (nnvis_core.toolkit.AttributionPlugin)" if attribution else "no"),
        ("distribution", f"{origin.distribution} {origin.version}".strip()),
        ("module", origin.module),
        ("plugin API", str(plugin.api_version)),
    ]
    lines = [f"{plugin.name}: {plugin.title}"]
    lines += [f"{INDENT}{label:<13} {value}" for label, value in facts]
    lines += ["", *textwrap.wrap(" ".join(plugin.description.split()), WIDTH - len(INDENT),
                                initial_indent=INDENT, subsequent_indent=INDENT), ""]
    lines += parameter_lines(plugin.name, plugin.params)
    return "\n".join(lines)


def parameter_lines(plugin_name: str, params: Sequence[Param]) -> list[str]:
    """A table of parameters (name, type, default, allowed values), each followed by its wrapped help."""
    if not params:
        return ["parameters: none"]
    rows = [("name", "type", "default", "allowed")]
    rows += [(p.name, p.type.__name__, format_value(p.default), allowed_values(p)) for p in params]
    # a very long cell (a default list of names) pushes its own row out rather than widening every row
    widths = [max(len(row[i]) for row in rows if len(row[i]) <= MAX_CELL) for i in range(3)]
    lines = [f"parameters (--set {plugin_name}.NAME=VALUE):"]
    for index, row in enumerate(rows):
        cells = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3]))
        lines.append(f"{INDENT}{cells}  {row[3]}".rstrip())
        if index and params[index - 1].help:
            lines += textwrap.wrap(" ".join(params[index - 1].help.split()), WIDTH - 3 * len(INDENT),
                                   initial_indent=3 * INDENT, subsequent_indent=3 * INDENT)
    return lines
