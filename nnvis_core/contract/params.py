"""Typed plugin parameters, set from the command line or a TOML file.

A plugin declares its parameters; the core parses `--set name.param=value`
strings and TOML values against them so that a typo or a bad value is a usage
error naming the parameter and what it accepts, before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence


class ParamError(ValueError):
    """A parameter name or value the plugin does not accept."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Param:
    """One parameter of a plugin.

    type: int, float, bool or str. choices: the allowed values, if a closed set.
    minimum / maximum: inclusive bounds for numbers.
    check: an extra validator that returns an error message or None.
    """

    name: str
    type: type
    default: Any
    help: str = ""
    choices: Sequence[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None
    check: Callable[[Any], str | None] | None = None

    def allowed(self) -> str:
        """A short description of the accepted values, for error messages."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.type is bool:
            return "true or false"
        kind = {int: "an integer", float: "a number", str: "a string"}[self.type]
        if self.minimum is not None and self.maximum is not None:
            return f"{kind} from {self.minimum} to {self.maximum}"
        if self.minimum is not None:
            return f"{kind} >= {self.minimum}"
        if self.maximum is not None:
            return f"{kind} <= {self.maximum}"
        return kind

    def coerce(self, raw: Any, qualified_name: str | None = None) -> Any:
        """Turn a CLI string or a TOML value into a checked value of this type."""
        label = qualified_name or self.name
        bad = ParamError(f"invalid value {raw!r} for {label}: expected {self.allowed()}")
        value: Any
        if self.type is bool:
            if isinstance(raw, bool):
                value = raw
            elif isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
                value = raw.strip().lower() in _TRUE
            else:
                raise bad
        elif self.type is int:
            if isinstance(raw, bool):
                raise bad
            try:
                value = int(raw) if not isinstance(raw, float) or raw.is_integer() else None
            except (TypeError, ValueError):
                raise bad from None
            if value is None:
                raise bad
        elif self.type is float:
            if isinstance(raw, bool):
                raise bad
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise bad from None
        else:
            value = str(raw)
        if self.choices is not None and value not in self.choices:
            raise bad
        if self.minimum is not None and value < self.minimum:
            raise bad
        if self.maximum is not None and value > self.maximum:
            raise bad
        if self.check is not None:
            message = self.check(value)
            if message:
                raise ParamError(f"invalid value {raw!r} for {label}: {message}")
        return value


def resolve_params(
    plugin_name: str, declared: Sequence[Param], given: Mapping[str, Any]
) -> dict[str, Any]:
    """Defaults overlaid with the given values, each checked.

    Raises ParamError for an unknown name (listing the known ones) or a bad value.
    """
    by_name = {p.name: p for p in declared}
    values = {p.name: p.default for p in declared}
    for key, raw in given.items():
        if key not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            raise ParamError(f"unknown parameter {plugin_name}.{key}: {plugin_name} accepts {known}")
        values[key] = by_name[key].coerce(raw, f"{plugin_name}.{key}")
    return values


def parse_assignments(assignments: Sequence[str]) -> dict[str, dict[str, str]]:
    """Split repeated `plugin.param=value` strings into {plugin: {param: value}}."""
    result: dict[str, dict[str, str]] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        plugin, dot, param = key.strip().partition(".")
        if not sep or not dot or not plugin or not param:
            raise ParamError(f"--set expects PLUGIN.PARAM=VALUE, got {item!r}")
        result.setdefault(plugin, {})[param] = value
    return result
