"""The Ray engine (`--engine ray`): image-scope plugin calls on a pool of Ray actors.

Why actors: each worker (nnvis_core.engines.worker.ImageWorker) loads the model once, from the same
source and weights the driver resolved (checked by the weights' SHA-256), and then serves
batch after batch. The driver reads each image's bytes (and its mask's) and ships them, so
workers need no shared file system; a worker decodes, classifies, runs the plugins whose
result the cache does not already hold and encodes their pictures, so the driver only
writes files. How batches stream and the cache recovers a run: nnvis_core.engines.pool.

A worker that dies costs only its unfinished batch: Ray restarts the actor (RESTARTS times)
and retries the batch. A driver that dies leaves a work folder that `--resume` finishes on
either engine.

Dataset-scope plugins run on the driver, as with the local engine, but their passes over the
folder (ImageStream.map_batches: the pooled features t-SNE and the neighbours share) run on
the workers. Model-scope plugins run on the driver too, and the independent pieces they hand to
RunContext.map_tasks (channel maximization's pictures, a batch of channels each) on the workers.
"""

from __future__ import annotations

import contextlib
import os
import socket
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

RAY_MISSING = "--engine ray needs Ray, an optional extra: pip install 'nnvis[ray]'"
RESTARTS = 3  # per actor; each restart retries the batch the dead process held


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(RAY_MISSING) from None
    return ray


class RayBackend:
    """Calls on one model's Ray actors (nnvis_core.engines.pool.Backend)."""

    def __init__(self, ray: Any, actors: list[Any]) -> None:
        self.ray = ray
        self.actors = actors

    def submit(self, worker: int, method: str, *args: object) -> Any:
        return getattr(self.actors[worker], method).remote(*args)

    def wait_one(self, handles: list[Any]) -> Any:
        [ready], _ = self.ray.wait(handles, num_returns=1)
        return ready

    def get(self, handle: Any) -> Any:
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayError as error:
            raise WorkerLost(f"its Ray worker died {RESTARTS + 1} times: {root_cause(error)}") from None

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


class RayEngine(PoolEngine):
    """Image-scope calls on Ray actors, one pool per model (see the module docstring)."""

    name = "ray"

    def __init__(self, ray: Any, config: ReportConfig, log: Callable[[str], None],
                 encoder: PictureEncoder | None = None) -> None:
        super().__init__(config, log, encoder)
        self.ray = ray

    @classmethod
    @contextlib.contextmanager
    def start(cls, config: ReportConfig, plans: list[RunPlan], log: Callable[[str], None],
              encoder: PictureEncoder | None = None) -> Iterator[RayEngine]:
        """Join the cluster at config.address, or start a local Ray (shut down afterwards) unless this
        process already runs one; start every model's workers and check they loaded the same weights."""
        ray = import_ray()
        cls.refuse_models_in_memory(plans, "--engine ray")
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
        try:
            with cls(ray, config, log, encoder).running(plans) as engine:
                yield engine
        finally:
            if started:
                ray.shutdown()

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
        return Pool(RayBackend(ray, actors), count, pids)


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
