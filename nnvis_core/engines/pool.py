"""Image-scope calls on a pool of workers (nnvis_core.engines.worker), whatever runs them.

The driver streams the folder in batches: it looks each (image, plugin) result up in the
cache, reads the files' bytes (and the masks') and ships them with the plugins still to
run to the least loaded worker, at most IN_FLIGHT_PER_WORKER batches per worker not yet
emitted, so the driver's memory does not grow with the folder. Each new result is stored
in the cache as its batch arrives, before the report is written: the cache is the unit of
recovery. Answers reach the sink in folder order.

Two kinds of pools run this: Ray actors (nnvis_core.engines.ray_actors, `--engine ray`), which Ray
restarts when they die, and local processes (nnvis_core.engines.processes, `--jobs N`). They
differ only in their Backend: how a call is sent to a worker and its answer collected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from nnvis_core.contract.context import ImageItem
from nnvis_core.contract.stream import stream_items
from nnvis_core.engines.worker import Shipped
from nnvis_core.images import ImageReadError, ImageRecord, read_image_bytes
from nnvis_core.run.cache import NoCache, ResultCache
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.plan import CallOutcome, Outcomes, RunPlan, Unreadable, UsageError
from nnvis_core.run.sink import PictureEncoder

IN_FLIGHT_PER_WORKER = 2


class WorkerLost(Exception):
    """A call no worker could answer; the message says what happened ("the Ray worker died 4 times: ...")."""


class Backend(Protocol):
    """How calls reach one model's workers: `submit(worker, method, *args)` calls
    ImageWorker.method(*args) on worker number `worker` and returns a handle; `wait_one` returns
    a handle of `handles` whose answer is ready; `get` returns that answer or raises WorkerLost."""

    def submit(self, worker: int, method: str, *args: object) -> Any: ...

    def wait_one(self, handles: list[Any]) -> Any: ...

    def get(self, handle: Any) -> Any: ...

    def close(self) -> None:
        """Stop the workers."""


@dataclass
class Batch:
    """Images of one batch on their way: what the driver already knows, and the worker's answer."""

    number: int
    records: list[ImageRecord]
    keys: list[dict[str, str]]  # per image: plugin name -> cache key
    cached: list[dict[str, CallOutcome]]
    unreadable: dict[int, str] = field(default_factory=dict)  # position -> reason found on the driver
    answers: list | None = None  # the worker's, for the shipped (readable) images in order
    lost: str | None = None  # why no worker could finish it


@dataclass
class Pool:
    """One model's workers."""

    backend: Backend
    size: int
    pids: list[int]  # each worker's process now; a new one means it was restarted
    dead: set[int] = field(default_factory=set)  # workers out of restarts


class PoolEngine:
    """Image-scope calls on workers, one pool per model (see the module docstring). Subclasses
    start the pools (`pools`, by model index) and name themselves in the log (`name`)."""

    name = "pool"

    def __init__(self, config: ReportConfig, log: Callable[[str], None], encoder: PictureEncoder | None = None) -> None:
        self.config = config
        self.encoder = encoder
        self.log = log
        self.pools: dict[int, Pool] = {}
        self.restarts = 0

    def _start_pool(self, plan: RunPlan) -> Pool:
        raise NotImplementedError

    @staticmethod
    def refuse_models_in_memory(plans: list[RunPlan], option: str) -> None:
        """A UsageError for a model given as an object: workers load every model from its source."""
        for plan in plans:
            if plan.ctx.model.source.startswith("python"):
                raise UsageError(f"{option}: model {plan.ctx.model.name} was given in memory; workers load the "
                                 f"model from its source, so give it as a model spec (demo, torchvision:NAME, a "
                                 f"checkpoint file)")

    @contextlib.contextmanager
    def running(self, plans: list[RunPlan]) -> Iterator[PoolEngine]:
        """This engine with a pool started for every model that has a plugin to run, stopped afterwards."""
        try:
            for plan in plans:
                if plan.runs:
                    self.pools[plan.model_index] = self._start_pool(plan)
            yield self
        finally:
            for pool in self.pools.values():
                pool.backend.close()

    def status(self) -> str:
        """For the progress bar: the workers still serving and the batches retried so far."""
        workers = sum(pool.size for pool in self.pools.values())
        alive = workers - sum(len(pool.dead) for pool in self.pools.values())
        return f"{self.name}: {alive}/{workers} workers, {self.restarts} retried"

    def image_results(self, plan: RunPlan, cache: ResultCache | NoCache,
                      unreadable: Unreadable) -> Iterator[tuple[ImageItem, Outcomes]]:
        pool = self.pools.get(plan.model_index)
        if pool is None or not plan.image_runs:  # no image-scope plugin: the items are all the sink needs
            for batch in stream_items(plan.records, plan.ctx, unreadable):
                yield from ((item, []) for item in batch)
            return
        size = plan.ctx.batch_size
        waiting = (plan.records[start:start + size] for start in range(0, len(plan.records), size))
        pending: dict[Any, tuple[Batch, int]] = {}  # handle -> (batch, worker)
        finished: dict[int, Batch] = {}  # answered, waiting for the batches before them
        load = [0] * pool.size
        submitted = emitted = 0
        while True:
            # Bounded by batches not yet emitted (not only those pending), so that one slow batch
            # cannot make the answers after it pile up on the driver.
            while submitted - emitted < IN_FLIGHT_PER_WORKER * pool.size:
                records = next(waiting, None)
                if records is None:
                    break
                batch = self._prepare(submitted, records, plan, cache)
                submitted += 1
                alive = [w for w in range(pool.size) if w not in pool.dead]
                if not alive:
                    batch.lost = "every worker of this model has died"
                    finished[batch.number] = batch
                    continue
                worker = min(alive, key=lambda w: load[w])
                pending[pool.backend.submit(worker, "run_batch", self._ship(batch, plan))] = (batch, worker)
                load[worker] += 1
            if pending:
                handle = pool.backend.wait_one(list(pending))
                batch, worker = pending.pop(handle)
                load[worker] -= 1
                self._receive(batch, handle, pool, worker, cache)
                finished[batch.number] = batch
            elif emitted not in finished:
                break
            while emitted in finished:
                yield from self._emit(finished.pop(emitted), plan, unreadable)
                emitted += 1

    def map_batches(self, plan: RunPlan, fn: Callable[..., object], args: tuple) -> Iterator[object]:
        """fn over the folder's batches on the workers, the results in folder order. A batch no worker
        could finish fails the pass (and with it the dataset plugin's call, which the report shows)."""
        size = plan.ctx.batch_size
        batches = (plan.records[start:start + size] for start in range(0, len(plan.records), size))
        calls = (("map_batch", [Shipped(record, data, mask, ()) for record, data, mask in self._read(records, plan)],
                  fn, args) for records in batches)
        for result in self._in_order(plan, calls, "a batch of the pass"):
            if result is not None:
                yield result

    def map_tasks(self, plan: RunPlan, fn: Callable[..., object], tasks: list) -> Iterator[object]:
        """fn(ctx, task) for each task on the workers, the results in order. A task no worker could
        finish fails the model-scope call (the report shows it)."""
        return self._in_order(plan, (("map_task", fn, task) for task in tasks), "a task of the call")

    def _in_order(self, plan: RunPlan, calls: Iterator[tuple], what: str) -> Iterator[object]:
        """Each (method, *args) call on the workers in turn, at most IN_FLIGHT_PER_WORKER per worker
        outstanding, the answers in the calls' order."""
        pool = self.pools[plan.model_index]  # started for every model with a plugin to run
        in_flight: list[Any] = []
        turn = 0
        while True:
            while len(in_flight) < IN_FLIGHT_PER_WORKER * pool.size:
                call = next(calls, None)
                if call is None:
                    break
                in_flight.append(pool.backend.submit(turn % pool.size, *call))
                turn += 1
            if not in_flight:
                return
            try:
                yield pool.backend.get(in_flight.pop(0))
            except WorkerLost as lost:
                raise RuntimeError(f"{what} could not be finished: {lost}") from None

    @staticmethod
    def _files(record: ImageRecord, plan: RunPlan) -> tuple[bytes | None, bytes | None]:
        """The image file's bytes (None for an image in memory) and its mask's (None without one);
        ImageReadError for a file that cannot be read."""
        data = None if record.image is not None else read_image_bytes(record.path)
        masks = plan.ctx.masks_dir
        mask_path = masks / record.relpath if masks is not None else None
        return data, mask_path.read_bytes() if mask_path is not None and mask_path.is_file() else None

    def _read(self, records: list[ImageRecord],
              plan: RunPlan) -> Iterator[tuple[ImageRecord, bytes | None, bytes | None]]:
        """Each readable record with its file's bytes and its mask's (see _files)."""
        for record in records:
            try:
                yield record, *self._files(record, plan)
            except ImageReadError:
                continue  # reported by the image pass already

    def _prepare(self, number: int, records: list[ImageRecord], plan: RunPlan, cache: ResultCache | NoCache) -> Batch:
        keys, cached = [], []
        for record in records:
            digest = cache.record_digest(record, plan.ctx.masks_dir)
            named = {run.plugin.name: cache.image_key(run, digest) for run in plan.image_runs}
            hits = {name: CallOutcome(*hit) for name, key in named.items() if (hit := cache.load(key)) is not None}
            cache.hits += len(hits)
            keys.append(named)
            cached.append(hits)
        return Batch(number, records, keys, cached)

    def _ship(self, batch: Batch, plan: RunPlan) -> list[Shipped]:
        shipped = []
        for position, record in enumerate(batch.records):
            try:
                data, mask = self._files(record, plan)
            except ImageReadError as error:
                batch.unreadable[position] = error.reason
                continue
            todo = tuple(run.plugin.name for run in plan.image_runs if run.plugin.name not in batch.cached[position])
            shipped.append(Shipped(record, data, mask, todo))
        return shipped

    def _receive(self, batch: Batch, handle: Any, pool: Pool, worker: int, cache: ResultCache | NoCache) -> None:
        """The worker's answer, each new result stored in the cache at once; a restarted worker noted."""
        try:
            pid, batch.answers = pool.backend.get(handle)
        except WorkerLost as lost:
            batch.lost = str(lost)
            pool.dead.add(worker)
            self.log(f"{self.name}: batch {batch.number} lost, worker {worker} given up: {batch.lost}")
            return
        if pid != pool.pids[worker]:
            pool.pids[worker] = pid
            self.restarts += 1
            self.log(f"{self.name}: worker {worker} was restarted; its batch was retried "
                     f"({self.restarts} restarts so far)")
        readable = [p for p in range(len(batch.records)) if p not in batch.unreadable]
        for position, answer in zip(readable, batch.answers):
            if isinstance(answer, str):
                continue
            for name, outcome in answer[1].items():
                if outcome.ok:
                    cache.store(batch.keys[position][name], outcome.result, outcome.seconds)

    def _emit(self, batch: Batch, plan: RunPlan, unreadable: Unreadable) -> Iterator[tuple[ImageItem, Outcomes]]:
        if batch.lost is not None:
            yield from self._emit_lost(batch, plan, unreadable)
            return
        answers = iter(batch.answers or [])
        for position, record in enumerate(batch.records):
            answer = batch.unreadable.get(position) or next(answers)
            if isinstance(answer, str):
                unreadable(record, answer)
                continue
            item, computed = answer
            known = {**batch.cached[position], **computed}
            yield item, [(run, known[run.plugin.name]) for run in plan.image_runs]

    def _emit_lost(self, batch: Batch, plan: RunPlan, unreadable: Unreadable) -> Iterator[tuple[ImageItem, Outcomes]]:
        """A batch no worker finished: its images decoded here, its missing calls failed (not cached, so
        --resume tries them again), so the report still lists every image."""
        failed = CallOutcome(None, 0.0, f"not computed: {batch.lost}")
        positions = {record.relpath: p for p, record in enumerate(batch.records)}
        for items in stream_items(batch.records, plan.ctx, unreadable):
            for item in items:
                cached = batch.cached[positions[item.record.relpath]]
                yield item, [(run, cached.get(run.plugin.name, failed)) for run in plan.image_runs]
