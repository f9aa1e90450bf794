"""The local engine with `--jobs N`: image-scope plugin calls in N worker processes on this machine.

Why processes and not threads: plugins hook the model's modules and seed torch's global
generator for each call, so two calls cannot share one model in one process. Each process
is a nnvis_core.engines.worker.ImageWorker, as a Ray actor is: it loads the model once (the weights'
hash checked against the driver's), decodes the bytes it is sent, runs the plugins and
encodes their pictures, so this process only writes files. Streaming, ordering and the cache
are nnvis_core.engines.pool's, shared with the Ray engine.

Processes are started with `spawn` (a forked child of a process whose torch thread pool
has run can hang) and each runs torch on cores / N threads. A process that dies is started
again (RESTARTS times) and the batches it held are sent again, as Ray restarts an actor; a
worker out of restarts is given up, its batches fail in the report (not cached).
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from nnvis_core.engines.pool import Pool, PoolEngine, WorkerLost
from nnvis_core.engines.worker import ImageWorker, WorkerSpec
from nnvis_core.run.cache import model_digest
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.plan import RunPlan, UsageError
from nnvis_core.run.registry import one_line
from nnvis_core.run.sink import PictureEncoder

RESTARTS = 3  # per worker, as the Ray engine's actors
_WORKER: ImageWorker | None = None  # this process's, in a worker process


def _start_worker(spec: WorkerSpec) -> int:
    global _WORKER
    _WORKER = ImageWorker(spec)
    return _WORKER.pid()


def _call_worker(method: str, args: tuple) -> object:
    return getattr(_WORKER, method)(*args)


class ProcessBackend:
    """Calls on one model's worker processes (nnvis_core.engines.pool.Backend): one single-process
    executor per worker, so that a worker's model stays loaded between calls. A worker whose process
    dies is started again (up to RESTARTS times) and the calls it held are sent again, as Ray does."""

    def __init__(self, spec: WorkerSpec, count: int) -> None:
        self.spec = spec
        self.context = multiprocessing.get_context("spawn")
        self.executors = [self._executor() for _ in range(count)]
        self.restarts = [0] * count
        self.calls: dict[futures.Future, tuple[int, str, tuple, futures.ProcessPoolExecutor]] = {}

    def _executor(self) -> futures.ProcessPoolExecutor:
        return futures.ProcessPoolExecutor(max_workers=1, mp_context=self.context)

    def start(self) -> list[int]:
        """Load the run in every worker (in parallel); their process ids."""
        starts = [executor.submit(_start_worker, self.spec) for executor in self.executors]
        return [start.result() for start in starts]

    def submit(self, worker: int, method: str, *args: object) -> futures.Future:
        executor = self.executors[worker]
        try:
            handle = executor.submit(_call_worker, method, args)
        except futures.process.BrokenProcessPool as broken:  # its process died since: get() restarts it
            handle = futures.Future()
            handle.set_exception(broken)
        self.calls[handle] = (worker, method, args, executor)
        return handle

    def wait_one(self, handles: list[futures.Future]) -> futures.Future:
        done, _ = futures.wait(handles, return_when=futures.FIRST_COMPLETED)
        return next(handle for handle in handles if handle in done)

    def get(self, handle: futures.Future) -> Any:
        worker, method, args, executor = self.calls.pop(handle)
        try:
            return handle.result()
        except futures.process.BrokenProcessPool:
            if self.executors[worker] is executor:  # the first of its calls to find it dead: a new process
                if self.restarts[worker] >= RESTARTS:
                    raise WorkerLost(f"its worker process died {RESTARTS + 1} times") from None
                self.restarts[worker] += 1
                executor.shutdown(wait=False, cancel_futures=True)
                self.executors[worker] = self._executor()
                try:
                    self.executors[worker].submit(_start_worker, self.spec).result()
                except Exception as error:  # noqa: BLE001 - it cannot load the run any more
                    raise WorkerLost(f"its worker process died and could not start again: {one_line(error)}") from None
            return self.get(self.submit(worker, method, *args))
        except Exception as error:  # noqa: BLE001 - whatever the worker raised, in one line
            raise WorkerLost(f"its worker process failed: {one_line(error)}") from None

    def close(self, wait: bool = True) -> None:
        for executor in self.executors:
            executor.shutdown(wait=wait, cancel_futures=True)


def refuse_a_main_script_without_a_file() -> None:
    """A UsageError when the main script cannot be run again by a spawned process: Python's spawn
    re-runs it from its file, and a script read from standard input (`python - <<EOF`) has none."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if getattr(main, "__spec__", None) is None and path is not None and not os.path.isfile(path):
        raise UsageError(f"--jobs: worker processes start by running the main script again, and {path} is not "
                         f"a file (a script read from standard input?): save it to a file, or use --jobs 1")


class ProcessEngine(PoolEngine):
    """Image-scope calls in local worker processes, one pool per model (see the module docstring)."""

    name = "local"

    @classmethod
    @contextlib.contextmanager
    def start(cls, config: ReportConfig, plans: list[RunPlan], log: Callable[[str], None],
              encoder: PictureEncoder | None = None) -> Iterator[ProcessEngine]:
        """Start config.jobs worker processes for every model and check they loaded the same weights."""
        cls.refuse_models_in_memory(plans, "--jobs")
        refuse_a_main_script_without_a_file()
        with cls(config, log, encoder).running(plans) as engine:
            yield engine

    def _start_pool(self, plan: RunPlan) -> Pool:
        config = self.config
        count = config.jobs
        threads = max(1, (os.cpu_count() or 1) // count)
        spec = WorkerSpec(replace(config, images=()), config.models[plan.model_index],
                          tuple(run.plugin.name for run in plan.image_runs), plan.ctx.device.type,
                          model_digest(plan.ctx.module), self.encoder, threads)
        backend = ProcessBackend(spec, count)
        try:
            pids = backend.start()
        except Exception as error:  # noqa: BLE001 - a worker that cannot load the model, say
            backend.close(wait=False)
            raise UsageError(f"--jobs: a worker process could not load the run: {one_line(error)}") from None
        self.log(f"local: {count} worker processes for {plan.ctx.model.name}, {threads} torch "
                 f"thread{'s' * (threads > 1)} each")
        return Pool(backend, count, pids)
