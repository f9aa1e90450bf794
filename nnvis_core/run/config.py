"""Run settings from the command line and an optional TOML file.

The TOML file holds the same settings as the command line; plugin parameters
go in `[params.PLUGIN]` tables. Command-line values win over the file.

    model = "torchvision:resnet18"
    weights = "DEFAULT"
    plugins = ["saliency"]

Several models are compared side by side when `model` is a list (`--model` given
more than once); `weights` and `arch` are then one value for every model, or a
list with one value per model.
    [params.saliency]
    target = "predicted"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from nnvis_core.contract.params import ParamError

FILE_KEYS = {
    "model": (str, list), "weights": (str, list), "arch": (str, list), "labels": str, "plugins": list, "device": str,
    "batch_size": int, "seed": int, "masks": str, "concepts": str, "resize": int, "crop": int, "params": dict,
    "plugin_timeout": float, "model_output": str, "metrics": str,
}


class ConfigError(ValueError):
    """A config file that cannot be read or holds unknown settings."""


@dataclass(frozen=True)
class ModelChoice:
    """One model of a run: the --model spec with its --weights and --arch."""

    model: str
    weights: str | None = None
    arch: str | None = None


@dataclass
class ReportConfig:
    image_dir: Path
    out_dir: Path
    model: str = "demo"
    weights: str | None = None
    arch: str | None = None
    labels: Path | None = None
    masks: Path | None = None  # ground-truth object masks: MASKS/relpath for each image
    concepts: Path | None = None  # concept images for the concept plugins: CONCEPTS/NAME/*, one folder a concept
    trust_checkpoint: bool = False
    model_output: str | None = None  # the part of each model's forward output holding the class scores
    plugins: list[str] | None = None  # None: the plugins that declare default_enabled; ["all"]: every one
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The trust metrics scored for every attribution map (nnvis_core.metrics): names, categories, default,
    # all or none, comma-separated.
    metrics: str = "default"
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
    more_models: tuple[ModelChoice, ...] = ()  # models compared with the first (`model`), in order
    # Images given in memory (nnvis.run with PIL images or a tensor): used instead of walking image_dir.
    images: tuple[Any, ...] = ()  # nnvis_core.images.ImageRecord
    # Where the image-scope calls run (nnvis_core.engines.local): "local" (this process) or "ray".
    engine: str = "local"
    address: str | None = None  # Ray: auto, HOST:PORT or ray://...; None starts a local instance
    workers: int | None = None  # Ray actors; None: one per CPU the cluster offers (GPU: per GPU)
    gpus_per_worker: float = 0.0
    jobs: int = 1  # local engine: worker processes for the image-scope calls (1: this process)

    @property
    def models(self) -> list[ModelChoice]:
        """Every model of the run, the first one (`model`, `weights`, `arch`) first."""
        return [ModelChoice(self.model, self.weights, self.arch), *self.more_models]


def split_models(models: str | list[str] | None, weights: str | list[str] | None,
                 arch: str | list[str] | None) -> dict[str, Any]:
    """ReportConfig's model settings from one or several --model, --weights and --arch values.

    One value of --weights (or --arch) applies to every model; several pair with the
    models by position, so there must then be exactly one per model.
    """
    names = [models] if isinstance(models, str) else list(models or [])
    if not names:
        return {k: v for k, v in {"weights": _single(weights, "weights"), "arch": _single(arch, "arch")}.items()
                if v is not None}
    paired = {"weights": _per_model(weights, len(names), "weights"), "arch": _per_model(arch, len(names), "arch")}
    if len(set(zip(names, paired["weights"], paired["arch"]))) < len(names):
        raise ConfigError("the same model is given twice (same --model, --weights and --arch)")
    choices = [ModelChoice(*values) for values in zip(names, paired["weights"], paired["arch"])]
    first = choices[0]
    settings: dict[str, Any] = {"model": first.model, "more_models": tuple(choices[1:])}
    settings.update({k: v for k, v in (("weights", first.weights), ("arch", first.arch)) if v is not None})
    return settings


def _single(value: str | list[str] | None, option: str) -> str | None:
    if isinstance(value, list):
        if len(value) > 1:
            raise ConfigError(f"--{option} is given {len(value)} times but --model is not given")
        return value[0] if value else None
    return value


def _per_model(value: str | list[str] | None, count: int, option: str) -> list[str | None]:
    values = [value] if isinstance(value, str) else list(value or [])
    if len(values) <= 1:
        return (values or [None]) * count
    if len(values) != count:
        raise ConfigError(f"--{option} is given {len(values)} times for {count} models: give it once "
                          f"(for every model) or once per --model, in the same order")
    return values


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
        kinds = FILE_KEYS[key] if isinstance(FILE_KEYS[key], tuple) else (FILE_KEYS[key],)
        if not isinstance(value, kinds) or isinstance(value, bool) and int in kinds:
            raise ConfigError(f"{path}: setting {key!r} must be a {' or '.join(k.__name__ for k in kinds)}")
        if list in kinds and str in kinds and isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: setting {key!r} must be a str or a list of str")
    for plugin, table in data.get("params", {}).items():
        if not isinstance(table, dict):
            raise ParamError(f"{path}: [params.{plugin}] must be a table of parameter = value")
    return data


# --- the one builder every front end calls ------------------------------------------------------

# Where a run reads from and writes to: each front end sets these its own way (the CLI from
# IMAGE_DIR, -o, --resume, --force, -q; nnvis.run from `images` and later Run.save). Every other
# option of build_config is offered, under the same name, by `nnvis report` and `nnvis.run`.
PLACE_OPTIONS = ("image_dir", "out_dir", "resume", "force", "quiet", "images")
DEFAULT_OUT = Path("nnvis-report")
ENGINES = ("local", "ray")


def build_config(image_dir: str | Path, out_dir: str | Path | None = None, *,
                 model: str | list[str] | None = None, weights: str | list[str] | None = None,
                 arch: str | list[str] | None = None, labels: str | Path | None = None,
                 masks: str | Path | None = None, concepts: str | Path | None = None,
                 trust_checkpoint: bool | None = None,
                 model_output: str | None = None, plugins: str | list[str] | None = None,
                 params: dict[str, dict[str, Any]] | None = None, metrics: str | list[str] | None = None,
                 device: str | None = None, batch_size: int | None = None, seed: int | None = None,
                 resize: int | None = None, crop: int | None = None,
                 mean: str | tuple[float, ...] | None = None, std: str | tuple[float, ...] | None = None,
                 plugin_timeout: float | None = None, engine: str | None = None, address: str | None = None,
                 workers: int | None = None, gpus_per_worker: float | None = None, jobs: int | None = None,
                 resume: bool = False, force: bool = False, quiet: bool = False,
                 images: tuple[Any, ...] = ()) -> ReportConfig:
    """The run's ReportConfig from keyword arguments, checked: the one place `nnvis report` and
    `nnvis.run` turn options into a run, so an option added here is offered and checked the same
    way by both. None means "the default". Raises ConfigError with one line naming the option.

    model, weights, arch: one value, or a list (several models side by side; see split_models).
    plugins: a list of names or one comma-separated string ("all": every plugin).
    metrics: the trust metrics scored for each attribution map (nnvis_core.metrics), a list or one
    comma-separated string of metric names, categories, default (the cheap ones), all or none.
    mean, std: three numbers, or a string of three comma-separated numbers.
    model_output: where a forward that returns more than a tensor keeps the class scores (a key, an
    attribute or a tuple position; nnvis_core.models.logits); by default `logits` or the first tensor.

        build_config("examples/demo/images", model=["demo", "demo-vit"], plugins="gradcam,occlusion")
    """
    settings: dict[str, Any] = dict(split_models(model, weights, arch))
    settings.update(
        labels=_path(labels, "labels"), masks=_path(masks, "masks"), concepts=_path(concepts, "concepts"),
        trust_checkpoint=bool(trust_checkpoint),
        model_output=_text(model_output, "model_output"),
        plugins=_plugin_names(plugins), params=_params(params), metrics=_metrics(metrics),
        device=_text(device, "device") or "auto", seed=_whole(seed, "seed", None) if seed is not None else 0,
        batch_size=_whole(batch_size, "batch_size", 1) if batch_size is not None else 16,
        resize=_whole(resize, "resize", 1), crop=_whole(crop, "crop", 1),
        mean=_three(mean, "mean"), std=_three(std, "std"), plugin_timeout=_seconds(plugin_timeout),
        engine=_engine(engine), address=_text(address, "address"), workers=_whole(workers, "workers", 1),
        gpus_per_worker=_number(gpus_per_worker, "gpus_per_worker") if gpus_per_worker is not None else 0.0,
        jobs=_whole(jobs, "jobs", 1) if jobs is not None else 1,
    )
    return ReportConfig(image_dir=Path(image_dir), out_dir=Path(out_dir) if out_dir is not None else DEFAULT_OUT,
                        resume=resume, force=force, quiet=quiet, images=tuple(images), **settings)


def option_name(name: str) -> str:
    """How a message names an option, for readers of either front end: `batch_size (--batch-size)`."""
    return f"{name} (--{name.replace('_', '-')})"


def _whole(value: Any, name: str, least: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or least is not None and value < least:
        at_least = f" of at least {least}" if least is not None else ""
        raise ConfigError(f"{option_name(name)} must be a whole number{at_least}, got {value!r}")
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{option_name(name)} must be a number of at least 0, got {value!r}")
    return float(value)


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{option_name('plugin_timeout')} must be a positive number of seconds, got {value!r}")
    return float(value)


def _text(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{option_name(name)} must be a string, got {type(value).__name__}")
    return value


def _path(value: Any, name: str) -> Path | None:
    if value is not None and not isinstance(value, (str, Path)):
        raise ConfigError(f"{option_name(name)} must be a path, got {type(value).__name__}")
    return Path(value) if value is not None else None


def _metrics(value: Any) -> str:
    """The --metrics value as one comma-separated string, checked against the catalog."""
    from nnvis_core.metrics import MetricError
    from nnvis_core.metrics.suite import DEFAULT, chosen_names

    if value is None:
        return DEFAULT
    if not isinstance(value, (str, list, tuple)) or not all(isinstance(v, str) for v in
                                                              ([value] if isinstance(value, str) else value)):
        raise ConfigError(f"{option_name('metrics')} must be a string or a list of strings, got {value!r}")
    spec = value if isinstance(value, str) else ",".join(value)
    try:
        chosen_names(spec)
    except MetricError as error:
        raise ConfigError(str(error)) from None
    return spec


def _engine(value: Any) -> str:
    if value is not None and value not in ENGINES:
        raise ConfigError(f"{option_name('engine')} must be one of {', '.join(ENGINES)}, got {value!r}")
    return value or "local"


def _three(value: Any, name: str) -> tuple[float, float, float] | None:
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in (value.split(",") if isinstance(value, str) else value))
        given = f"{len(values)} numbers"
    except (TypeError, ValueError):
        values, given = (), "something else than numbers"
    if len(values) != 3:
        raise ConfigError(f"{option_name(name)} expects three comma-separated numbers, got {given}")
    return values  # type: ignore[return-value]


def _plugin_names(value: Any) -> list[str] | None:
    if value is None:
        return None
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{option_name('plugins')} must be plugin names, got {value!r}")
    return [name.strip() for name in names if name.strip()]


def _params(value: Any) -> dict[str, dict[str, Any]]:
    for plugin, values in (value or {}).items():
        if not isinstance(values, dict):
            raise ConfigError(f"{plugin}=...: plugin parameters go as a dict, e.g. {plugin}={{'target': 'true'}}")
    return {plugin: dict(values) for plugin, values in (value or {}).items()}
