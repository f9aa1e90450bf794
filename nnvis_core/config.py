"""Run settings from the command line and an optional TOML file.

The TOML file holds the same settings as the command line; plugin parameters
go in `[params.PLUGIN]` tables. Command-line values win over the file.

    model = "torchvision:resnet18"
    weights = "DEFAULT"
    plugins = ["saliency"]
    [params.saliency]
    target = "predicted"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnvis_core.params import ParamError

FILE_KEYS = {
    "model": str, "weights": str, "arch": str, "labels": str, "plugins": list, "device": str,
    "batch_size": int, "seed": int, "masks": str, "resize": int, "crop": int, "params": dict,
    "plugin_timeout": float,
}


class ConfigError(ValueError):
    """A config file that cannot be read or holds unknown settings."""


@dataclass
class ReportConfig:
    image_dir: Path
    out_dir: Path
    model: str = "demo"
    weights: str | None = None
    arch: str | None = None
    labels: Path | None = None
    masks: Path | None = None  # ground-truth object masks: MASKS/relpath for each image
    trust_checkpoint: bool = False
    plugins: list[str] | None = None  # None: the plugins that declare default_enabled; ["all"]: every one
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "auto"
    batch_size: int = 16
    seed: int = 0
    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    quiet: bool = False
    plugin_timeout: float | None = None  # seconds each plugin call may take; None: no limit
    force: bool = False  # write into an existing folder that is not an nnvis report
    resume: bool = False  # reuse the results an interrupted run for the same OUT left behind


def read_config_file(path: Path) -> dict[str, Any]:
    """Settings from a TOML file, checked against FILE_KEYS."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config ({error.strerror or error})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from None
    for key, value in data.items():
        if key not in FILE_KEYS:
            raise ConfigError(f"{path}: unknown setting {key!r}; allowed: {', '.join(sorted(FILE_KEYS))}")
        if FILE_KEYS[key] is float and isinstance(value, int) and not isinstance(value, bool):
            data[key] = value = float(value)
        if not isinstance(value, FILE_KEYS[key]) or isinstance(value, bool) and FILE_KEYS[key] is int:
            raise ConfigError(f"{path}: setting {key!r} must be a {FILE_KEYS[key].__name__}")
    for plugin, table in data.get("params", {}).items():
        if not isinstance(table, dict):
            raise ParamError(f"{path}: [params.{plugin}] must be a table of parameter = value")
    return data
