"""Where the image-scope plugin calls run. An engine walks a plan's images in folder order
and yields each readable image with its outcomes; the runner hands both to the sink, so the
report is written the same way whichever engine computed it.

The local engine (the default) computes in this process, one batch at a time (a plugin with a
batched entry, Plugin.run_batch, gets the batch's uncached images in one call), or with
`--jobs N` in N worker processes (nnvis_core.engines.processes). The Ray engine
(nnvis_core.engines.ray_actors, `--engine ray`) computes on a pool of Ray actors. All take a
result from the cache when it holds one and store each new result as soon as it exists,
so an interrupted run of either engine is resumed by either.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Protocol

from nnvis_core.contract.context import ImageItem
from nnvis_core.contract.plugin import runs_batches
from nnvis_core.contract.stream import BatchFunction, stream_items
from nnvis_core.run.batches import batch_outcomes
from nnvis_core.run.cache import NoCache, ResultCache
from nnvis_core.run.calls import call_plugin
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.plan import CallOutcome, Outcomes, PluginRun, RunPlan, Unreadable, UsageError
from nnvis_core.run.sink import PictureEncoder


class Engine(Protocol):
    def image_results(self, plan: RunPlan, cache: ResultCache | NoCache,
                      unreadable: Unreadable) -> Iterator[tuple[ImageItem, Outcomes]]:
        """Each readable image, in folder order, with its image-scope outcomes (plan.image_runs)."""
        ...

    def status(self) -> str:
        """A few words for the progress bar (workers, retries); empty when there is nothing to say."""
        ...

    def map_batches(self, plan: RunPlan, fn: BatchFunction, args: tuple) -> Iterator[object]:
        """fn(ctx, items, *args) for each batch of the plan's readable images, in folder order (a
        dataset plugin's pass over the folder: nnvis_core.contract.stream.ImageStream.map_batches)."""
        ...

    def map_tasks(self, plan: RunPlan, fn: Callable[..., object], tasks: list) -> Iterator[object]:
        """fn(ctx, task) for each task, in order (a model-scope call's pieces: RunContext.map_tasks)."""
        ...


class LocalEngine:
    """Every call in this process. The outcomes are computed lazily, as the runner asks
    for them, so the sink sees each image before its slowest plugin has run."""

    def status(self) -> str:
        return ""

    def map_batches(self, plan: RunPlan, fn: BatchFunction, args: tuple) -> Iterator[object]:
        for batch in stream_items(plan.records, plan.ctx):
            yield fn(plan.ctx, batch, *args)

    def map_tasks(self, plan: RunPlan, fn: Callable[..., object], tasks: list) -> Iterator[object]:
        return (fn(plan.ctx, task) for task in tasks)

    def image_results(self, plan: RunPlan, cache: ResultCache | NoCache,
                      unreadable: Unreadable) -> Iterator[tuple[ImageItem, Outcomes]]:
        for batch in stream_items(plan.records, plan.ctx, unreadable):
            together = _BatchedRuns(plan, cache, batch)
            for position, item in enumerate(batch):
                yield item, self._outcomes(plan, cache, item, together, position)

    @staticmethod
    def _outcomes(plan: RunPlan, cache: ResultCache | NoCache, item: ImageItem, together: "_BatchedRuns",
                  position: int) -> Outcomes:
        ctx = plan.ctx
        digest = together.digests[position]
        for run in plan.image_runs:
            if runs_batches(run.plugin):
                yield run, together.outcome(run, position)
                continue
            yield run, cache.call(cache.image_key(run, digest), lambda: call_plugin(
                ctx, run, item, lambda: run.plugin.run_image(ctx, item, dict(run.params))))


class _BatchedRuns:
    """The outcomes of the plugins with a batched entry for one batch of images, computed for the
    whole batch when its first image asks (the others' come from here, or from the cache)."""

    def __init__(self, plan: RunPlan, cache: ResultCache | NoCache, items: list[ImageItem]) -> None:
        self.plan, self.cache, self.items = plan, cache, items
        self.digests = [cache.item_digest(item, plan.ctx.masks_dir) for item in items]
        self.done: dict[str, list[CallOutcome]] = {}

    def outcome(self, run: PluginRun, position: int) -> CallOutcome:
        name = run.plugin.name
        if name not in self.done:
            keys = [self.cache.image_key(run, digest) for digest in self.digests]
            self.done[name] = batch_outcomes(self.plan.ctx, run, self.items, keys, self.cache)
        return self.done[name][position]


@contextlib.contextmanager
def open_engine(config: ReportConfig, plans: list[RunPlan], log: Callable[[str], None] = lambda line: None,
                encoder: PictureEncoder | None = None) -> Iterator[Engine]:
    """The engine config.engine names, started for the run and stopped after it. `encoder` is the
    sink's picture encoding: the Ray engine runs it on the workers; locally the sink runs it."""
    if config.engine not in ("local", "ray"):
        raise UsageError(f"--engine {config.engine!r}: use local or ray")
    if config.engine == "ray" and config.jobs > 1:
        raise UsageError("--jobs is for the local engine; with --engine ray, --workers sets the pool")
    if config.engine == "local" and config.jobs > 1:
        from nnvis_core.engines.processes import ProcessEngine

        with ProcessEngine.start(config, plans, log, encoder) as engine:
            yield engine
        return
    if config.engine == "local":
        yield LocalEngine()
        return
    from nnvis_core.engines.ray_actors import RayEngine  # only with --engine ray: Ray is an optional extra

    with RayEngine.start(config, plans, log, encoder) as engine:
        yield engine
