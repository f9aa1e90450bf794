"""The core owns the run: check the options, load the model, stream the images, call each plugin,
and emit every result to a sink (nnvis_core.run.sink).

Failures are contained where they happen: an unreadable image is listed and
skipped, a plugin that raises on one image gets an error outcome for that image
and runs on the others. Only usage errors (bad options, no images, a model
that cannot load) stop the run before it starts, before the sink writes anything.

    plan = prepare(config, registry)            # UsageError: one line, nothing written
    outcome = execute(plan, sink, cache)        # results stream to the sink
    outcome = run(config, registry, sink)       # both, with the sink's begin/finish/close

Several models (`--model` more than once) are run one after the other, each with
its own plan (prepare_all); the sink's `begin` is called once per model, before
that model's results.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from nnvis_core.contract.conformance import degenerate_reasons
from nnvis_core.contract.context import RunContext
from nnvis_core.contract.plugin import Plugin, Scope
from nnvis_core.contract.stream import ImageStream
from nnvis_core.engines.local import Engine, LocalEngine, open_engine
from nnvis_core.images import ImageRecord, discover_images
from nnvis_core.models import LayerNotFound, find_layer
from nnvis_core.models.layers import LAYER_KEYWORDS, error_line
from nnvis_core.run.cache import NoCache, ResultCache, run_fingerprint
from nnvis_core.run.calls import (
    call_plugin,
    choose_device,
    load_context,
    plugin_runs,
    select_plugins,
)
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.plan import (
    CallOutcome,
    PluginRun,
    RunOutcome,
    RunPlan,
    SkippedPlugin,
    UsageError,
)
from nnvis_core.run.registry import Registry, one_line
from nnvis_core.run.sink import Sink, encoder_of
from nnvis_core.toolkit.precision import exact_float32

__all__ = ["UsageError", "PluginRun", "RunOutcome", "RunPlan", "CallOutcome",
           "prepare", "prepare_all", "execute", "run", "choose_device"]


def prepare(config: ReportConfig, registry: Registry) -> RunPlan:
    """Everything that can fail as a usage error, before any output is written (the first model's plan)."""
    return prepare_all(config, registry)[0]


def prepare_all(config: ReportConfig, registry: Registry) -> list[RunPlan]:
    """One plan per model (config.models), all checked before any output is written.

    With several models, a plugin named on the command line that does not apply to
    one of them (a transformer method and a convnet) is left out for that model
    only; it is a usage error when it applies to none.
    """
    if config.plugin_timeout is not None and not config.plugin_timeout > 0:
        raise UsageError(f"plugin timeout must be a positive number of seconds, got {config.plugin_timeout}")
    runs = plugin_runs(registry, select_plugins(registry, config.plugins), config.params, config.plugin_timeout)
    try:
        records = list(config.images) or discover_images(config.image_dir, skip=[config.out_dir])
    except (FileNotFoundError, NotADirectoryError) as error:
        raise UsageError(str(error)) from None
    if not records:
        raise UsageError(f"{config.image_dir}: no image files found (looked for JPEG, PNG, WebP, BMP, TIFF, GIF...)")
    if config.masks is not None and not config.masks.is_dir():
        raise UsageError(f"--masks {config.masks}: not a folder")
    device = choose_device(config.device)
    choices = config.models
    everything = list(config.plugins or []) == ["all"] or len(choices) > 1
    plans = []
    for index, choice in enumerate(choices):
        ctx = load_context(config, choice, registry, device, runs, several=len(choices) > 1)
        kept, skipped = applicable(runs, ctx, everything)
        check_layers(kept, ctx)
        plan = RunPlan(config, kept, records, ctx, list(registry.failures), skipped, index, len(choices))
        check_input_size(plan)
        plans.append(plan)
    if len(plans) > 1:
        _check_each_plugin_runs(runs, plans, named=list(config.plugins or []) != ["all"])
    return plans


def _check_each_plugin_runs(runs: list[PluginRun], plans: list[RunPlan], named: bool) -> None:
    """With several models, a named plugin must apply to at least one of them."""
    if not named:
        return
    for plugin_run in runs:
        name = plugin_run.plugin.name
        if not any(name in {r.plugin.name for r in plan.runs} for plan in plans):
            reasons = "; ".join(f"{plan.ctx.model.name}: {s.reason}" for plan in plans for s in plan.skipped
                                if s.name == name)
            raise UsageError(f"{name} applies to none of the models ({reasons})")


def applicable(runs: list[PluginRun], ctx: RunContext, everything: bool) -> tuple[list[PluginRun], list[SkippedPlugin]]:
    """The runs whose plugin applies to the model; the others are left out under `--plugins all`
    and a usage error when named."""
    kept, skipped = [], []
    for plugin_run in runs:
        reason = plugin_run.plugin.applies_with(ctx, plugin_run.params)
        needs_layer = False
        if reason is None:
            reason = default_layer_problem(plugin_run.plugin, ctx, plugin_run.params)
            needs_layer = reason is not None
        if reason is None:
            kept.append(plugin_run)
        elif everything:
            skipped.append(SkippedPlugin(plugin_run.plugin.name, reason, needs_layer=needs_layer))
        else:
            raise UsageError(f"{plugin_run.plugin.name} does not apply to model {ctx.model.name}: {reason}")
    return kept, skipped


def default_layer_problem(plugin: Plugin, ctx: RunContext, params: dict) -> str | None:
    """Why `plugin` finds no layer to read when the user named none (Grad-CAM on an MLP), or None.

    Asked before the run, so that such a plugin is refused (or left out under
    `--plugins all`) once, not failed on every image."""
    layer = params.get("layer")
    if not isinstance(layer, str) or layer not in LAYER_KEYWORDS:
        return None
    try:
        plugin.default_layers(ctx.module)
    except (LayerNotFound, ValueError) as error:
        return error_line(error)
    return None


def check_layers(runs: list[PluginRun], ctx: RunContext) -> None:
    """A `layer` parameter naming no layer is a usage error, not a failure on every image."""
    for plugin_run in runs:
        layer = plugin_run.params.get("layer")
        if isinstance(layer, str) and layer not in LAYER_KEYWORDS:
            try:
                find_layer(ctx.module, layer)
            except LayerNotFound as error:
                raise UsageError(f"{plugin_run.plugin.name}.layer: {error}") from None


def judged(outcome: CallOutcome) -> CallOutcome:
    """The outcome with what makes its result degenerate (a zero map, a flat picture, a loss that did not
    fall): judged here, where every engine's results and the cache's pass, so that each is judged once."""
    if not outcome.ok:
        return outcome
    return replace(outcome, degenerate=degenerate_reasons(outcome.result))


def check_input_size(plan: RunPlan) -> None:
    """A model that rejects its own preprocessed input size is a usage error, not 1000 failures."""
    ctx = plan.ctx
    size = ctx.model.preprocess.side
    try:
        with torch.no_grad():
            ctx.module(torch.zeros(1, 3, size, size, device=ctx.device))
    except Exception as error:  # noqa: BLE001
        raise UsageError(f"model {ctx.model.name} rejects input of size 3x{size}x{size}: {one_line(error)}") from None


def execute(
    plan: RunPlan,
    sink: Sink,
    cache: ResultCache | NoCache | None = None,
    advance: Callable[[int], None] = lambda n: None,
    log: Callable[[str], None] = lambda line: None,
    engine: Engine | None = None,
) -> RunOutcome:
    """Stream the images through every plugin and emit each result to the sink.

    With a cache, a result already computed for the same inputs is taken from it. The
    image-scope calls run on `engine` (nnvis_core.engines.local; default: this process), the
    dataset- and model-scope calls here.
    """
    cache = cache or NoCache()
    ctx = plan.ctx
    per_image = plan.image_runs
    others = [r for r in plan.runs if r.plugin.scope is not Scope.IMAGE]
    failed_images = failed_calls = 0

    def unreadable(record: ImageRecord, reason: str) -> None:
        nonlocal failed_images
        failed_images += 1
        sink.add_unreadable(record, reason)
        log(f"{record.relpath}: {reason}")
        advance(max(1, len(per_image)))

    engine = engine or LocalEngine()
    for item, outcomes in engine.image_results(plan, cache, unreadable):
        sink.add_image(item)
        for plugin_run, outcome in outcomes:
            if outcome.error:
                failed_calls += 1
                log(f"{item.record.relpath}: plugin {plugin_run.plugin.name} failed: {outcome.error}")
            sink.add_image_result(item, plugin_run, judged(outcome))
            advance(1)
        if not per_image:
            advance(1)

    # one for all dataset plugins: they share what they derive; their passes over the folder
    # (map_batches) run on the engine
    items = ImageStream(plan.records, ctx, lambda fn, args: engine.map_batches(plan, fn, args))
    ctx.task_mapper = lambda fn, tasks: engine.map_tasks(plan, fn, tasks)  # model-scope pieces: on the engine
    try:
        for plugin_run in others:
            if plugin_run.plugin.scope is Scope.DATASET:
                call = lambda: plugin_run.plugin.run_dataset(ctx, items, dict(plugin_run.params))  # noqa: E731
            else:
                call = lambda: plugin_run.plugin.run_model(ctx, dict(plugin_run.params))  # noqa: E731
            outcome = cache.call(cache.global_key(plugin_run), lambda: call_plugin(ctx, plugin_run, None, call))
            if outcome.error:
                failed_calls += 1
                log(f"plugin {plugin_run.plugin.name} failed: {outcome.error}")
            sink.add_global_result(plugin_run, judged(outcome))
            advance(1)
    finally:
        ctx.task_mapper = None  # the engine stops after the run; the context may outlive it
    return RunOutcome(plan.config.out_dir, failed_images, failed_calls, cache.hits)


def run(
    config: ReportConfig,
    registry: Registry,
    sink: Sink,
    progress: Callable[[int, Callable[[], str]], Callable[[int], None]] | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> RunOutcome:
    """Prepare and execute one run into `sink`: the whole of `nnvis report` but the page.

    progress(total, status) returns an `advance(n)` callable (None: no progress); status() gives
    the engine's few words on its workers, for the bar.
    Raises UsageError before the sink writes anything when the options are wrong.
    When the sink names a cache folder, every result is kept there as it
    arrives, and with config.resume the results of an interrupted run are reused.
    On a GPU the run computes in full float32 with deterministic cuDNN (toolkit.exact_float32).
    """
    with exact_float32():
        return _run(config, registry, sink, progress, log)


def _run(config, registry, sink, progress, log) -> RunOutcome:
    plans = prepare_all(config, registry)
    for plan in plans:
        for skipped in plan.skipped:
            where = f" for {plan.ctx.model.name}" if len(plans) > 1 else ""
            log(f"left out {skipped.name}{where}: {skipped.reason}")
    outcomes = []
    advance = lambda n: None  # noqa: E731
    try:
        with open_engine(config, plans, log, encoder_of(sink)) as engine:
            for plan in plans:  # model by model: each model's results reach the sink in one block
                cache_dir = sink.begin(plan)
                if plan.model_index == 0 and progress:
                    advance = progress(sum(plan.steps for plan in plans), engine.status)
                cache = ResultCache(cache_dir, run_fingerprint(plan.ctx)) if cache_dir is not None else NoCache()
                outcomes.append(execute(plan, sink, cache, advance, log, engine))
        outcome = RunOutcome(config.out_dir, max(o.failed_images for o in outcomes),
                             sum(o.failed_calls for o in outcomes), sum(o.reused for o in outcomes))
        sink.finish(outcome)
    finally:
        sink.close()  # after a failure a report sink keeps its work folder, for --resume
    if outcome.reused:
        log(f"reused {outcome.reused} results of an interrupted run")
    return outcome
