"""Image-scope calls a batch at a time, for plugins that declare a batched entry (Plugin.run_batch).

A batch is an optimization, never a change of meaning: each image's outcome is what its own
`run_image` call would give (the plugin promises results independent of the batch's other
images), it is cached under its own key, and a batch that fails gives way to per-image calls,
so one bad image costs only its own result. The engines (nnvis_core.engines.local and the pool
workers) call `batch_outcomes`; plugins without a batched entry get `call_plugin` per image.
"""

from __future__ import annotations

import time
from typing import Sequence

from nnvis_core.contract.artifacts import ArtifactError, Result, as_result
from nnvis_core.contract.conformance import hook_keys, remove_leaked_hooks
from nnvis_core.contract.context import ImageItem, RunContext
from nnvis_core.contract.plugin import runs_batches
from nnvis_core.run.cache import NoCache, ResultCache
from nnvis_core.run.calls import call_plugin, check_overlays, plugin_traceback, seed_call
from nnvis_core.run.plan import CallOutcome, PluginRun
from nnvis_core.run.registry import one_line
from nnvis_core.run.timeout import CallTimeout, call_with_time_limit

__all__ = ["batch_outcomes", "call_batch", "call_each"]


def call_each(ctx: RunContext, run: PluginRun, items: Sequence[ImageItem]) -> list[CallOutcome]:
    """One `run_image` call per item, each with its own seed, time limit and error."""
    return [call_plugin(ctx, run, item, lambda item=item: run.plugin.run_image(ctx, item, dict(run.params)))
            for item in items]


def call_batch(ctx: RunContext, run: PluginRun, items: Sequence[ImageItem]) -> list[CallOutcome]:
    """Each item's outcome, from one `run_batch` call when the plugin has one and more than one item
    is to be computed, else from `call_each`.

    The batch is seeded as its first item's call would be (a batch of one behaves as run_image),
    gets the per-call time limit times its size, and its time is shared evenly among its items.
    A result that fails the checks call_plugin applies (a valid result, overlays of the image's
    aspect ratio) is that item's error alone; a batch that raises, returns the wrong number of
    results, runs past its limit or leaves a hook on the model is computed again one item at a
    time, so that each item's call is checked as call_plugin checks it.
    """
    if len(items) < 2 or not runs_batches(run.plugin) or run.stuck:
        return call_each(ctx, run, items)
    limit = None if run.time_limit is None else run.time_limit * len(items)
    seed_call(ctx.seed_for(items[0], run.plugin.name), ctx.device)
    hooks = hook_keys(ctx.module)
    start = time.perf_counter()
    returned: list | None = None
    try:
        returned = call_with_time_limit(lambda: list(run.plugin.run_batch(ctx, list(items), dict(run.params))), limit)
    except CallTimeout as failure:
        run.stuck = not failure.stopped  # then call_each skips every item, as call_plugin would
    except Exception:  # noqa: BLE001 - one bad item must not fail the batch: each is tried alone
        pass
    finally:  # before any per-item call, so that each call's own hook check starts clean
        leaked = remove_leaked_hooks(ctx.module, hooks)
        ctx.module.zero_grad(set_to_none=True)
    if returned is None or leaked or len(returned) != len(items):
        return call_each(ctx, run, items)
    share = (time.perf_counter() - start) / len(items)
    return [_checked(result, item, share) for result, item in zip(returned, items)]


def _checked(returned: object, item: ImageItem, seconds: float) -> CallOutcome:
    """One item's outcome: its result, or the checks' complaint as that item's error."""
    try:
        result: Result = as_result(returned)
        check_overlays(result, item)
    except ArtifactError as failure:
        return CallOutcome(None, seconds, f"bad output: {failure}", plugin_traceback(failure))
    except Exception as failure:  # noqa: BLE001 - a plugin's odd return value must not end the run
        return CallOutcome(None, seconds, one_line(failure), plugin_traceback(failure))
    return CallOutcome(result, seconds)


def batch_outcomes(ctx: RunContext, run: PluginRun, items: Sequence[ImageItem], keys: Sequence[str],
                   cache: ResultCache | NoCache) -> list[CallOutcome]:
    """Each item's outcome for `run`: from the cache under the item's own key when it holds one, the
    others computed together (call_batch) and each successful result stored at once under its key."""
    outcomes: list[CallOutcome | None] = []
    for key in keys:
        hit = cache.load(key)
        if hit is not None:
            cache.hits += 1
        outcomes.append(CallOutcome(*hit) if hit is not None else None)
    missing = [position for position, outcome in enumerate(outcomes) if outcome is None]
    computed = call_batch(ctx, run, [items[position] for position in missing]) if missing else []
    for position, outcome in zip(missing, computed):
        if outcome.ok:
            assert outcome.result is not None
            cache.store(keys[position], outcome.result, outcome.seconds)
        outcomes[position] = outcome
    return outcomes  # type: ignore[return-value]
