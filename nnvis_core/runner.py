"""One report run: load the model, stream the images, call each plugin, hand results to the writer.

Failures are contained where they happen: an unreadable image is listed and
skipped, a plugin that raises on one image gets an error entry for that image
and runs on the others. Only usage errors (bad options, no images, a model
that cannot load) stop the run before it starts.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from nnvis_core.artifacts import ArtifactError, Result, as_result
from nnvis_core.cache import NoCache, ResultCache
from nnvis_core.config import ReportConfig
from nnvis_core.context import ImageItem, RunContext
from nnvis_core.images import ImageRecord, discover_images
from nnvis_core.models import LayerNotFound, ModelLoadError, ModelOptions, find_layer, load_model
from nnvis_core.models.layers import LAYER_KEYWORDS
from nnvis_core.params import ParamError, resolve_params
from nnvis_core.plugin import Plugin, Scope
from nnvis_core.registry import Registry, one_line
from nnvis_core.targets import TargetError, check_target
from nnvis_core.stream import ImageStream, stream_items
from nnvis_core.timeout import CallTimeout, call_with_time_limit


class UsageError(Exception):
    """Bad options or inputs found before any work: exit code 2, one line."""


@dataclass
class PluginRun:
    plugin: Plugin
    params: dict
    origin: str
    time_limit: float | None = None  # seconds per call; None: no limit
    stuck: bool = False  # a call ran past the limit and could not be stopped: skip the rest


@dataclass
class RunOutcome:
    out_dir: Path
    failed_images: int
    failed_calls: int

    @property
    def exit_code(self) -> int:
        return 1 if self.failed_images or self.failed_calls else 0


def select_plugins(registry: Registry, names: Sequence[str] | None) -> list[Plugin]:
    """The plugins to run, in the order given (or registry order for defaults/all)."""
    if names is None:
        return [r.item for r in registry.plugins.values() if r.item.default_enabled]
    if list(names) == ["all"]:
        return [r.item for r in registry.plugins.values()]
    unknown = [n for n in names if n not in registry.plugins]
    for failure in registry.failures:
        if failure.name in unknown:
            raise UsageError(f"plugin {failure.name} ({failure.distribution}) did not load: {failure.error}")
    if unknown:
        known = ", ".join(registry.plugins) or "none"
        raise UsageError(f"unknown plugin {', '.join(unknown)}; installed: {known} (see nnvis plugins)")
    return [registry.plugins[n].item for n in dict.fromkeys(names)]


def plugin_runs(registry: Registry, plugins: list[Plugin], given: dict[str, dict],
                time_limit: float | None = None) -> list[PluginRun]:
    for name in given:
        if name not in registry.plugins:
            raise UsageError(f"parameters given for unknown plugin {name!r}; installed: {', '.join(registry.plugins)}")
    runs = []
    for plugin in plugins:
        try:
            params = resolve_params(plugin.name, plugin.params, given.get(plugin.name, {}))
        except ParamError as error:
            raise UsageError(str(error)) from None
        runs.append(PluginRun(plugin, params, str(registry.plugins[plugin.name].origin), time_limit))
    return runs


def choose_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    try:
        return torch.device(spec)
    except RuntimeError:
        raise UsageError(f"--device {spec!r}: use cpu, cuda, cuda:N or auto") from None


def plugin_traceback(error: BaseException) -> str:
    """The traceback from the plugin's own code on: nnvis's calling frames are left out."""
    core = Path(__file__).resolve().parent
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None and core in Path(tb.tb_frame.f_code.co_filename).resolve().parents:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))


def call_plugin(ctx: RunContext, run: PluginRun, item: ImageItem | None, call: Callable[[], object]):
    """Run one plugin call in isolation: (Result | None, seconds, error line, traceback).

    With run.time_limit, a call that runs longer is stopped (see nnvis_core.timeout).
    """
    if run.stuck:
        return None, 0.0, "skipped: an earlier call ran past the time limit and could not be stopped", None
    torch.manual_seed(ctx.seed_for(item, run.plugin.name))
    start = time.perf_counter()
    try:
        result: Result | None = as_result(call_with_time_limit(call, run.time_limit))
        error, trace = None, None
    except CallTimeout as failure:
        result, error, trace = None, str(failure), failure.stack
        run.stuck = not failure.stopped
    except ArtifactError as failure:
        result, error, trace = None, f"bad output: {failure}", traceback.format_exc()
    except Exception as failure:  # noqa: BLE001 - a plugin must not take the report down
        result, error, trace = None, one_line(failure), plugin_traceback(failure)
    finally:
        ctx.module.zero_grad(set_to_none=True)
    return result, time.perf_counter() - start, error, trace


def prepare(config: ReportConfig, registry: Registry):
    """Everything that can fail as a usage error, before any output is written."""
    if config.plugin_timeout is not None and not config.plugin_timeout > 0:
        raise UsageError(f"plugin timeout must be a positive number of seconds, got {config.plugin_timeout}")
    runs = plugin_runs(registry, select_plugins(registry, config.plugins), config.params, config.plugin_timeout)
    try:
        records = discover_images(config.image_dir, skip=[config.out_dir])
    except (FileNotFoundError, NotADirectoryError) as error:
        raise UsageError(str(error)) from None
    if not records:
        raise UsageError(f"{config.image_dir}: no image files found (looked for JPEG, PNG, WebP, BMP, TIFF, GIF...)")
    device = choose_device(config.device)
    options = ModelOptions(config.weights, config.arch, config.trust_checkpoint, config.labels, config.seed)
    try:
        model = load_model(config.model, options, registry, str(device))
    except ModelLoadError as error:
        raise UsageError(str(error)) from None
    model = model.with_preprocess(resize=config.resize, crop=config.crop, mean=config.mean, std=config.std)
    for run in runs:
        if "target" in run.params:
            try:
                check_target(str(run.params["target"]), model.class_names)
            except TargetError as error:
                raise UsageError(f"{run.plugin.name}.target: {error}") from None
    if config.masks is not None and not config.masks.is_dir():
        raise UsageError(f"--masks {config.masks}: not a folder")
    ctx = RunContext(model, device, config.seed, config.batch_size, config.masks)
    check_layers(runs, ctx)
    return runs, records, ctx


def check_layers(runs: list[PluginRun], ctx: RunContext) -> None:
    """A `layer` parameter naming no layer is a usage error, not a failure on every image."""
    for run in runs:
        layer = run.params.get("layer")
        if isinstance(layer, str) and layer not in LAYER_KEYWORDS:
            try:
                find_layer(ctx.module, layer)
            except LayerNotFound as error:
                raise UsageError(f"{run.plugin.name}.layer: {error}") from None


def check_input_size(ctx: RunContext, records: list[ImageRecord]) -> None:
    """A model that rejects its own preprocessed input size is a usage error, not 1000 failures."""
    size = ctx.model.preprocess.crop or ctx.model.preprocess.resize or 224
    try:
        with torch.no_grad():
            ctx.module(torch.zeros(1, 3, size, size, device=ctx.device))
    except Exception as error:  # noqa: BLE001
        raise UsageError(f"model {ctx.model.name} rejects input of size 3x{size}x{size}: {one_line(error)}") from None


def execute(
    config: ReportConfig,
    registry: Registry,
    writer,
    runs: list[PluginRun],
    records: list[ImageRecord],
    ctx: RunContext,
    advance: Callable[[int], None] = lambda n: None,
    log: Callable[[str], None] = lambda line: None,
    cache: ResultCache | NoCache | None = None,
) -> RunOutcome:
    """Stream the images through every plugin and hand each result to the writer.

    With a cache, a result already computed for the same inputs is taken from it.
    """
    cache = cache or NoCache()
    per_image = [r for r in runs if r.plugin.scope is Scope.IMAGE]
    others = [r for r in runs if r.plugin.scope is not Scope.IMAGE]
    failed_images = failed_calls = 0

    def unreadable(record: ImageRecord, reason: str) -> None:
        nonlocal failed_images
        failed_images += 1
        writer.add_unreadable(record, reason)
        log(f"{record.relpath}: {reason}")
        advance(max(1, len(per_image)))

    for batch in stream_items(records, ctx, unreadable):
        for item in batch:
            writer.add_image(item, ctx.class_names)
            digest = cache.item_digest(item, ctx.masks_dir)
            for run in per_image:
                result, seconds, error, trace = cache.call(cache.image_key(run, digest), lambda: call_plugin(
                    ctx, run, item, lambda: run.plugin.run_image(ctx, item, dict(run.params))
                ))
                if error:
                    failed_calls += 1
                    log(f"{item.record.relpath}: plugin {run.plugin.name} failed: {error}")
                writer.add_image_result(item, run, result, seconds, error, trace)
                advance(1)
            if not per_image:
                advance(1)

    items = ImageStream(records, ctx)  # one for all dataset plugins: they share what they derive
    for run in others:
        if run.plugin.scope is Scope.DATASET:
            call = lambda: run.plugin.run_dataset(ctx, items, dict(run.params))  # noqa: E731
        else:
            call = lambda: run.plugin.run_model(ctx, dict(run.params))  # noqa: E731
        result, seconds, error, trace = cache.call(cache.global_key(run), lambda: call_plugin(ctx, run, None, call))
        if error:
            failed_calls += 1
            log(f"plugin {run.plugin.name} failed: {error}")
        writer.add_global_result(run, result, seconds, error, trace)
        advance(1)
    return RunOutcome(config.out_dir, failed_images, failed_calls)
