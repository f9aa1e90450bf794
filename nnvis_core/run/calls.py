"""One plugin call, and what it needs: the plugins chosen with their parameters, the device,
and the model loaded and checked. The runner uses these in this process; the Ray engine's
workers (nnvis_core.engines.ray_actors) use the same functions to rebuild the run on their side.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Callable, Sequence

import torch

from nnvis_core.contract.artifacts import ArtifactError, Result, as_result
from nnvis_core.contract.conformance import hook_keys, overlay_problem, remove_leaked_hooks
from nnvis_core.contract.context import ImageItem, RunContext
from nnvis_core.contract.params import ParamError, resolve_params
from nnvis_core.contract.plugin import Plugin
from nnvis_core.contract.targets import TargetError, check_target
from nnvis_core.metrics.suite import chosen_names, score_map
from nnvis_core.models import ModelLoadError, ModelOptions, load_model
from nnvis_core.run.config import ModelChoice, ReportConfig
from nnvis_core.run.plan import CallOutcome, PluginRun, UsageError
from nnvis_core.run.registry import Registry, one_line
from nnvis_core.run.timeout import CallTimeout, call_with_time_limit

__all__ = ["call_plugin", "choose_device", "load_context", "plugin_runs", "select_plugins"]


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
    installed = {name: reg.item for name, reg in registry.plugins.items()}
    runs = []
    for plugin in plugins:
        try:
            params = resolve_params(plugin.name, plugin.params, given.get(plugin.name, {}))
            plugin.check_params(params, installed)
        except (ParamError, ValueError) as error:
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
    """The traceback from the plugin's own code on: nnvis's calling frames are left out.

    Every path leaves them out, the test kit's too: its wrappers (nnvis_core/testing.py) and
    the time limit's thread sit under nnvis_core like the runner. An error nnvis raised itself
    after the plugin returned (a bad output) has no plugin frame: its last frame is kept."""
    core = Path(__file__).resolve().parents[1]  # nnvis_core, every room
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None and core in Path(tb.tb_frame.f_code.co_filename).resolve().parents:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))


def seed_call(seed: int, device: torch.device | str) -> None:
    """Seed what a call draws from: the CPU generator, and every device's when the run uses one.

    torch.manual_seed also queues a seed for each lazily initialised backend (CUDA, XPU,
    MTIA), formatting a stack trace for each: about a millisecond per call, a tenth of a
    small image's whole cost, spent on generators a CPU run never uses."""
    torch.default_generator.manual_seed(seed)
    if torch.device(device).type != "cpu":
        torch.manual_seed(seed)


def call_plugin(ctx: RunContext, run: PluginRun, item: ImageItem | None, call: Callable[[], object]) -> CallOutcome:
    """Run one plugin call in isolation; with run.time_limit, a longer call is stopped (nnvis_core.run.timeout).

    What the test kit refuses, the run refuses too (nnvis_core.contract.conformance): a hook the
    call left on the model is removed and fails the call, naming the layer; an overlay map of
    another aspect ratio than the image fails it instead of being stretched."""
    if run.stuck:
        return CallOutcome(None, 0.0, "skipped: an earlier call ran past the time limit and could not be stopped")
    seed_call(ctx.seed_for(item, run.plugin.name), ctx.device)
    hooks = hook_keys(ctx.module)
    start = time.perf_counter()
    result: Result | None = None
    error = trace = None
    try:
        result = as_result(call_with_time_limit(call, run.time_limit))
        if item is not None:
            check_overlays(result, item)
    except CallTimeout as failure:
        error, trace = str(failure), failure.stack
        run.stuck = not failure.stopped
    except ArtifactError as failure:  # from nnvis's check of the output, or raised in the plugin's own code
        error, trace = f"bad output: {failure}", plugin_traceback(failure)
    except Exception as failure:  # noqa: BLE001 - a plugin must not take the report down
        error, trace = one_line(failure), plugin_traceback(failure)
    finally:
        leaked = remove_leaked_hooks(ctx.module, hooks)
        ctx.module.zero_grad(set_to_none=True)
    if leaked:
        left = (f"left {' and '.join(leaked)} (removed by nnvis; remove your hooks in a finally block, "
                "or use nnvis_core.toolkit.captured_output)")
        result, error = None, left if error is None else f"{error}; it also {left}"
    return CallOutcome(result, time.perf_counter() - start, error, trace)


def check_overlays(result: Result, item: ImageItem) -> None:
    """Raise ArtifactError for the first overlay map that would be stretched over the image."""
    for artifact in result.artifacts:
        problem = overlay_problem(artifact, item.pixels.shape)
        if problem:
            raise ArtifactError(problem)


def load_context(config: ReportConfig, choice: ModelChoice, registry: Registry, device: torch.device,
             runs: list[PluginRun], several: bool = False) -> RunContext:
    """One model loaded and checked against the plugins' targets."""
    options = ModelOptions(choice.weights, choice.arch, config.trust_checkpoint, config.labels, config.seed,
                           config.model_output, None if config.images else config.image_dir)
    try:
        model = load_model(choice.model, options, registry, str(device),
                           dict(resize=config.resize, crop=config.crop, mean=config.mean, std=config.std))
    except ModelLoadError as error:
        raise UsageError(str(error)) from None
    for plugin_run in runs:
        if "target" in plugin_run.params:
            try:
                check_target(str(plugin_run.params["target"]), model.class_names)
            except TargetError as error:
                which = f" (model {model.name})" if several else ""
                raise UsageError(f"{plugin_run.plugin.name}.target{which}: {error}") from None
    plugins = {name: reg.item for name, reg in registry.plugins.items()}
    chosen = tuple(plugin_run.plugin.name for plugin_run in runs)
    return RunContext(model, device, config.seed, config.batch_size, config.masks, plugins, chosen,
                      chosen_names(config.metrics), score_map, concepts_dir=config.concepts)
