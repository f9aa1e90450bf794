"""The Ray engine (`--engine ray`): image-scope plugin calls on a pool of Ray actors.

Why actors: each worker loads the model once, from the same source and weights the
driver resolved (checked by the weights' SHA-256), and then serves batch after batch.
The driver reads each image's bytes (and its mask's) and ships them, so workers need no
shared file system; a worker decodes, preprocesses and classifies its batch, runs the
plugins whose result the cache does not already hold, encodes the report's pictures for
them with the sink's encoder (so the driver only writes files), and sends back the items
and outcomes.

The cache is the unit of recovery. The driver stores each result as its batch arrives,
before the report is written, so a worker that dies costs only its unfinished batch
(Ray restarts the actor and retries the batch) and a driver that dies leaves a work
folder that `--resume` finishes on either engine. Results reach the sink in folder
order, with at most IN_FLIGHT_PER_WORKER batches per worker outstanding, so the driver's
memory does not grow with the folder.

Dataset-scope plugins run on the driver, as with the local engine, but their passes over the
folder (ImageStream.map_batches: the pooled features t-SNE and the neighbours share) run on
the workers. Model-scope plugins run on the driver too, and the independent pieces they hand to
RunContext.map_tasks (channel maximization's pictures, a batch of channels each) on the workers.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from nnvis_core.cache import NoCache, ResultCache, model_digest
from nnvis_core.calls import call_plugin, choose_device, load_context, plugin_runs, select_plugins
from nnvis_core.config import ModelChoice, ReportConfig
from nnvis_core.context import ImageItem
from nnvis_core.images import ImageReadError, ImageRecord, load_rgb, read_image_bytes
from nnvis_core.plan import CallOutcome, PluginRun, RunPlan, UsageError
from nnvis_core.registry import one_line
from nnvis_core.sink import PictureEncoder
from nnvis_core.stream import classify, load_mask, stream_items

Outcomes = Iterable[tuple[PluginRun, CallOutcome]]  # as nnvis_core.engine's (which imports this module)
Unreadable = Callable[[ImageRecord, str], None]

RAY_MISSING = "--engine ray needs Ray, an optional extra: pip install 'nnvis[ray]'"
IN_FLIGHT_PER_WORKER = 2
RESTARTS = 3  # per actor; each restart retries the batch the dead process held


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(RAY_MISSING) from None
    return ray


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to rebuild one model's run on its side."""

    config: ReportConfig  # without in-memory images: those travel batch by batch
    choice: ModelChoice
    plugins: tuple[str, ...]  # the image-scope plugins, by name
    device: str  # "cpu" or "cuda" (Ray gives a worker its GPUs as cuda:0...)
    weights_digest: str  # what the driver loaded; a worker that loads anything else stops
    encoder: PictureEncoder | None = None  # the sink's, so the driver only writes finished files


@dataclass(frozen=True)
class Shipped:
    """One image sent to a worker."""

    record: ImageRecord
    data: bytes | None  # the file's bytes; None when record.image holds the image in memory
    mask: bytes | None
    todo: tuple[str, ...]  # the plugins whose result is not cached yet


class ImageWorker:
    """A Ray actor: the model loaded once, then batch after batch of images."""

    def __init__(self, spec: WorkerSpec) -> None:
        from nnvis_core.memory import keep_freed_memory
        from nnvis_core.registry import load_registry

        keep_freed_memory()  # as `nnvis report` does in its own process

        registry = load_registry()
        runs = plugin_runs(registry, select_plugins(registry, list(spec.plugins)), spec.config.params,
                           spec.config.plugin_timeout)
        self.ctx = load_context(spec.config, spec.choice, registry, choose_device(spec.device), runs)
        found = model_digest(self.ctx.module)
        if found != spec.weights_digest:
            raise RuntimeError(f"the worker on {socket.gethostname()} loaded other weights for {self.ctx.model.name} "
                               f"than the driver (sha256 {found[:12]}, driver {spec.weights_digest[:12]}): every node "
                               f"needs the same weights file and library versions")
        self.runs = {run.plugin.name: run for run in runs}
        self.encoder = spec.encoder

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        """The Ray node this worker runs on (for the log: how far the pool spread)."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def run_batch(self, batch: list[Shipped]) -> tuple[int, list[str | tuple[ImageItem, dict[str, CallOutcome]]]]:
        """For each image, its unreadable reason, or the item with the outcomes of its `todo` plugins."""
        answers: list = self._decode(batch)
        for position, shipped in enumerate(batch):
            if not isinstance(answers[position], str):
                item = answers[position]
                answers[position] = (item, {name: self._encoded(item, self._call(name, item)) for name in shipped.todo})
                if self.encoder is not None:
                    item.pictures = self.encoder.encode_item(item)
        return os.getpid(), answers

    def _encoded(self, item: ImageItem, outcome: CallOutcome) -> CallOutcome:
        if self.encoder is None or not outcome.ok:
            return outcome
        return replace(outcome, pictures=self.encoder.encode_result(item, outcome))

    def map_task(self, fn: Callable[..., object], task: object) -> object:
        """fn(ctx, task): one piece of a model-scope call (RunContext.map_tasks)."""
        return fn(self.ctx, task)

    def map_batch(self, batch: list[Shipped], fn: Callable[..., object], args: tuple) -> object | None:
        """fn(ctx, items, *args) over the batch's readable images (None when none is)."""
        items = [answer for answer in self._decode(batch) if not isinstance(answer, str)]
        return fn(self.ctx, items, *args) if items else None

    def _decode(self, batch: list[Shipped]) -> list[str | ImageItem]:
        """Each image as the plugins see it (one forward pass for the batch), or why it is unreadable."""
        decoded, answers = [], []
        preprocess = self.ctx.model.preprocess
        for shipped in batch:
            record = shipped.record
            try:
                image = record.read() if shipped.data is None else load_rgb(record.path, data=shipped.data)
            except ImageReadError as error:
                answers.append(error.reason)
                continue
            mask = load_mask(self.ctx, record, shipped.mask) if shipped.mask is not None else None
            decoded.append((record, preprocess.display(image), mask))
            answers.append(None)
        items = iter(classify(self.ctx, decoded) if decoded else [])
        return [next(items) if answer is None else answer for answer in answers]

    def _call(self, name: str, item: ImageItem) -> CallOutcome:
        run = self.runs[name]
        return call_plugin(self.ctx, run, item, lambda: run.plugin.run_image(self.ctx, item, dict(run.params)))


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
    actors: list[Any]
    pids: list[int]  # each actor's process now; a new one means Ray restarted it
    spec: WorkerSpec
    dead: set[int] = field(default_factory=set)  # actors out of restarts


class RayEngine:
    """Image-scope calls on Ray actors, one pool per model (see the module docstring)."""

    def __init__(self, ray: Any, config: ReportConfig, log: Callable[[str], None],
                 encoder: PictureEncoder | None = None) -> None:
        self.ray = ray
        self.config = config
        self.encoder = encoder
        self.log = log
        self.pools: dict[int, Pool] = {}
        self.restarts = 0

    @classmethod
    @contextlib.contextmanager
    def start(cls, config: ReportConfig, plans: list[RunPlan], log: Callable[[str], None],
              encoder: PictureEncoder | None = None) -> Iterator[RayEngine]:
        """Join the cluster at config.address, or start a local Ray (shut down afterwards) unless this
        process already runs one; start every model's workers and check they loaded the same weights."""
        ray = import_ray()
        for plan in plans:
            if plan.ctx.model.source.startswith("python"):
                raise UsageError(f"--engine ray: model {plan.ctx.model.name} was given in memory; Ray workers load "
                                 f"the model from its source, so give it as a model spec (demo, torchvision:NAME, "
                                 f"a checkpoint file)")
        started = not ray.is_initialized()
        if started:
            check_reachable(config.address)
            try:
                if config.address:
                    ray.init(address=config.address, log_to_driver=False, configure_logging=False)
                else:
                    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                             configure_logging=False)
            except Exception as error:  # noqa: BLE001 - Ray raises several types for an unreachable cluster
                raise UsageError(f"--engine ray: cannot start or reach Ray at {config.address or 'a local instance'}: "
                                 f"{one_line(error)}") from None
        engine = cls(ray, config, log, encoder)
        try:
            for plan in plans:
                if plan.runs:
                    engine.pools[plan.model_index] = engine._start_pool(plan)
            yield engine
        finally:
            for pool in engine.pools.values():
                for actor in pool.actors:
                    ray.kill(actor)
            if started:
                ray.shutdown()

    def status(self) -> str:
        """For the progress bar: the workers still serving and the batches retried so far."""
        workers = sum(len(pool.actors) for pool in self.pools.values())
        alive = workers - sum(len(pool.dead) for pool in self.pools.values())
        return f"ray: {alive}/{workers} workers, {self.restarts} retried"

    def _start_pool(self, plan: RunPlan) -> Pool:
        ray, config = self.ray, self.config
        device = plan.ctx.device.type
        gpus = config.gpus_per_worker
        if device == "cuda" and not gpus:
            raise UsageError("--engine ray with --device cuda needs --gpus-per-worker above 0")
        resources = ray.cluster_resources()
        cpus = max(1.0, resources.get("CPU", 1.0))
        count = config.workers or max(1, int(resources.get("GPU", 0) / gpus) if gpus else int(cpus))
        spec = WorkerSpec(replace(config, images=()), config.models[plan.model_index],
                          tuple(run.plugin.name for run in plan.image_runs), device, model_digest(plan.ctx.module),
                          self.encoder)
        worker = ray.remote(ImageWorker).options(num_cpus=min(1.0, cpus / count), num_gpus=gpus,
                                                 max_restarts=RESTARTS, max_task_retries=RESTARTS)
        actors = [worker.remote(spec) for _ in range(count)]
        try:
            pids = ray.get([actor.pid.remote() for actor in actors])
            nodes = set(ray.get([actor.node.remote() for actor in actors]))
        except ray.exceptions.RayError as error:
            for actor in actors:
                ray.kill(actor)
            raise UsageError(f"--engine ray: a worker could not load the run: {root_cause(error)}") from None
        where = config.address or "a local Ray instance"
        self.log(f"ray: {count} workers for {plan.ctx.model.name} on {len(nodes)} node{'s' * (len(nodes) > 1)} "
                 f"of {where}")
        return Pool(actors, pids, spec)

    def image_results(self, plan: RunPlan, cache: ResultCache | NoCache,
                      unreadable: Unreadable) -> Iterator[tuple[ImageItem, Outcomes]]:
        pool = self.pools.get(plan.model_index)
        if pool is None or not plan.image_runs:  # no image-scope plugin: the items are all the sink needs
            for batch in stream_items(plan.records, plan.ctx, unreadable):
                yield from ((item, []) for item in batch)
            return
        size = plan.ctx.batch_size
        waiting = (plan.records[start:start + size] for start in range(0, len(plan.records), size))
        pending: dict[Any, tuple[Batch, int]] = {}  # ObjectRef -> (batch, actor index)
        finished: dict[int, Batch] = {}  # answered, waiting for the batches before them
        load = [0] * len(pool.actors)
        submitted = emitted = 0
        while True:
            # Bounded by batches not yet emitted (not only those pending), so that one slow batch
            # cannot make the answers after it pile up on the driver.
            while submitted - emitted < IN_FLIGHT_PER_WORKER * len(pool.actors):
                records = next(waiting, None)
                if records is None:
                    break
                batch = self._prepare(submitted, records, plan, cache)
                submitted += 1
                alive = [a for a in range(len(pool.actors)) if a not in pool.dead]
                if not alive:
                    batch.lost = "every Ray worker of this model has died"
                    finished[batch.number] = batch
                    continue
                actor = min(alive, key=lambda a: load[a])
                shipped = self._ship(batch, plan)
                pending[pool.actors[actor].run_batch.remote(shipped)] = (batch, actor)
                load[actor] += 1
            if pending:
                [ref], _ = self.ray.wait(list(pending), num_returns=1)
                batch, actor = pending.pop(ref)
                load[actor] -= 1
                self._receive(batch, ref, pool, actor, cache)
                finished[batch.number] = batch
            elif emitted not in finished:
                break
            while emitted in finished:
                yield from self._emit(finished.pop(emitted), plan, unreadable)
                emitted += 1

    def map_batches(self, plan: RunPlan, fn: Callable[..., object], args: tuple) -> Iterator[object]:
        """fn over the folder's batches on the workers, at most IN_FLIGHT_PER_WORKER batches per worker
        outstanding, the results in folder order. A batch no worker could finish fails the pass
        (and with it the dataset plugin's call, which the report shows)."""
        pool = self.pools[plan.model_index]  # started for every model with a dataset-scope plugin
        size = plan.ctx.batch_size
        waiting = (plan.records[start:start + size] for start in range(0, len(plan.records), size))
        in_flight: list[Any] = []
        turn = 0
        while True:
            while len(in_flight) < IN_FLIGHT_PER_WORKER * len(pool.actors):
                records = next(waiting, None)
                if records is None:
                    break
                shipped = [Shipped(record, data, mask, ()) for record, data, mask in self._read(records, plan)]
                in_flight.append(pool.actors[turn % len(pool.actors)].map_batch.remote(shipped, fn, args))
                turn += 1
            if not in_flight:
                return
            try:
                result = self.ray.get(in_flight.pop(0))
            except self.ray.exceptions.RayError as error:
                raise RuntimeError(f"a Ray worker could not finish a batch: {root_cause(error)}") from None
            if result is not None:
                yield result

    def map_tasks(self, plan: RunPlan, fn: Callable[..., object], tasks: list) -> Iterator[object]:
        """fn(ctx, task) for each task on the workers, at most IN_FLIGHT_PER_WORKER per worker outstanding,
        the results in order. A task no worker could finish fails the model-scope call (the report shows it)."""
        pool = self.pools[plan.model_index]  # started for every model with a plugin to run
        waiting = iter(tasks)
        in_flight: list[Any] = []
        turn = 0
        done = object()
        while True:
            while len(in_flight) < IN_FLIGHT_PER_WORKER * len(pool.actors):
                task = next(waiting, done)
                if task is done:
                    break
                in_flight.append(pool.actors[turn % len(pool.actors)].map_task.remote(fn, task))
                turn += 1
            if not in_flight:
                return
            try:
                yield self.ray.get(in_flight.pop(0))
            except self.ray.exceptions.RayError as error:
                raise RuntimeError(f"a Ray worker could not finish a task: {root_cause(error)}") from None

    def _read(self, records: list[ImageRecord], plan: RunPlan) -> Iterator[tuple[ImageRecord, bytes | None, bytes | None]]:
        """Each readable record with its file's bytes (None for an image in memory) and its mask's."""
        masks = plan.ctx.masks_dir
        for record in records:
            try:
                data = None if record.image is not None else read_image_bytes(record.path)
            except ImageReadError:
                continue  # reported by the image pass already
            mask_path = masks / record.relpath if masks is not None else None
            yield record, data, mask_path.read_bytes() if mask_path is not None and mask_path.is_file() else None

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
        masks = plan.ctx.masks_dir
        for position, record in enumerate(batch.records):
            try:
                data = None if record.image is not None else read_image_bytes(record.path)
            except ImageReadError as error:
                batch.unreadable[position] = error.reason
                continue
            mask_path = masks / record.relpath if masks is not None else None
            mask = mask_path.read_bytes() if mask_path is not None and mask_path.is_file() else None
            todo = tuple(run.plugin.name for run in plan.image_runs if run.plugin.name not in batch.cached[position])
            shipped.append(Shipped(record, data, mask, todo))
        return shipped

    def _receive(self, batch: Batch, ref: Any, pool: Pool, actor: int, cache: ResultCache | NoCache) -> None:
        """The worker's answer, each new result stored in the cache at once; a restarted worker noted."""
        try:
            pid, batch.answers = self.ray.get(ref)
        except self.ray.exceptions.RayError as error:
            batch.lost = f"its Ray worker died {RESTARTS + 1} times: {root_cause(error)}"
            pool.dead.add(actor)
            self.log(f"ray: batch {batch.number} lost, worker {actor} given up: {batch.lost}")
            return
        if pid != pool.pids[actor]:
            pool.pids[actor] = pid
            self.restarts += 1
            self.log(f"ray: worker {actor} was restarted; its batch was retried ({self.restarts} restarts so far)")
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


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A HOST:PORT that nothing answers on is an error now: ray.init would retry it for minutes."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address {address!r}: use auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise UsageError(f"--engine ray: cannot reach Ray at {address}: {error.strerror or error}") from None


def root_cause(error: BaseException) -> str:
    """The last line of a Ray error that names the exception a worker raised, else the first line."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if line.split(":")[0].endswith(("Error", "Exception"))]
    return (named[-1] if named else lines[0] if lines else type(error).__name__)[:300]
