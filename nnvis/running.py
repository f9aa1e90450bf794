"""`nnvis.run`: the CLI's run from Python, into a sink that keeps every result in memory.

The core runs exactly as for the CLI (nnvis_core.runner) with the configuration the CLI builds
(nnvis_core.run.config.build_config), into nnvis_core.run.sink.MemorySink: nothing is written to
disk until Run.save.
"""

from __future__ import annotations

import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from nnvis.images import image_source
from nnvis.models import model_specs
from nnvis.progress import progress_bar
from nnvis.results import Run
from nnvis_core.contract.params import ParamError
from nnvis_core.contract.plugin import Plugin
from nnvis_core.models.loaded import Preprocess
from nnvis_core.run.config import ConfigError, build_config
from nnvis_core.run.plan import UsageError
from nnvis_core.run.sink import MemorySink
from nnvis_core.runner import run as run_core


def run(images: Any, model: Any = "demo", plugins: Sequence[str | Plugin] | None = None, *,
        masks: str | Path | None = None, concepts: str | Path | None = None,
        metrics: str | Sequence[str] | None = None,
        labels: str | Path | None = None, weights: Any = None,
        arch: str | list[str] | None = None, compare: Sequence[Any] = (), preprocess: Preprocess | dict | None = None,
        class_names: Sequence[str] | None = None, trust_checkpoint: bool = False, model_output: str | None = None,
        device: str = "auto",
        seed: int = 0, batch_size: int = 16, resize: int | None = None, crop: int | None = None,
        mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
        plugin_timeout: float | None = None, engine: str = "local", address: str | None = None,
        workers: int | None = None, gpus_per_worker: float = 0.0, jobs: int = 1, progress: bool = True,
        cache: str | Path | None = None, **params: dict) -> Run:
    """Run plugins on images with a model, as `nnvis report` does on a folder.

    images: a folder, a list of image files, PIL images, or RGB tensors ((3, H, W) each or one
    (N, 3, H, W) batch, values in [0, 1] before normalization, taken as 8-bit like a PNG).

    plugins: names of installed plugins, or Plugin objects (registered for this run, exactly as an
    installed third-party plugin is); None: the default ones.
    model: a model spec as on the command line ("demo", "torchvision:resnet18", a file) or a
    torch.nn.Module (with `preprocess` and `class_names`, both read off `weights` when it is a
    torchvision WeightsEnum member, or off a timm model's pretrained config, when not given, else
    assumed with a warning: nnvis.models.assumed_preprocess); a list of them: side by side, as `--model`
    given more than once (compare: more models, the same).
    concepts: a folder of concept images, one subfolder per concept (the tcav plugin; docs/concepts.md).
    metrics: the trust metrics scored for every attribution map (docs/metrics.md): names, categories,
    "default" (the cheap ones), "all" or "none", comma-separated or as a list.
    cache: a folder where results are kept (nnvis_core.run.cache): a later run with the same inputs
    and settings takes them from there instead of computing them again. None: no cache. Plugin
    parameters go as keyword arguments named after the plugin, validated exactly as --set is:
    occlusion={"window": 16}. Every other option is the command line's of the same name, checked by
    the same function (nnvis_core.run.config.build_config).
    Raises nnvis.UsageError (one line) for what the CLI would refuse with exit code 2.
    """
    for name, values in params.items():
        if not isinstance(values, dict):
            raise UsageError(f"{name}=...: plugin parameters go as a dict, e.g. {name}={{'target': 'true'}}")
    given = [p for p in plugins or [] if isinstance(p, Plugin)]
    names = None if plugins is None else [p.name if isinstance(p, Plugin) else str(p) for p in plugins]
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    chosen = list(model) if isinstance(model, (list, tuple)) else [model]
    models = model_specs([*chosen, *compare], preprocess, class_names, given, weights)
    # a torchvision weights enum only described an in-memory module (above): the run loads nothing by it
    weights = weights if isinstance(weights, (str, list, tuple)) or weights is None else None
    try:
        with image_source(images) as (folder, records):
            try:
                config = build_config(
                    folder, Path(tempfile.gettempdir()) / "nnvis-python-run-unused", model=models.specs,
                    weights=list(weights) if isinstance(weights, tuple) else weights, arch=arch, labels=labels,
                    masks=masks, concepts=concepts, metrics=list(metrics) if isinstance(metrics, tuple) else metrics,
                    trust_checkpoint=trust_checkpoint, model_output=model_output, plugins=names,
                    params=params, device=device, seed=seed, batch_size=batch_size, resize=resize, crop=crop,
                    mean=mean, std=std,
                    plugin_timeout=plugin_timeout, engine=engine, address=address, workers=workers,
                    gpus_per_worker=gpus_per_worker, jobs=jobs, quiet=True, images=records)
            except (ConfigError, ParamError) as error:
                raise UsageError(str(error)) from None
            sink = MemorySink(cache_dir=Path(cache) if cache is not None else None)
            run_core(config, models.registry, sink, progress_bar if progress else None)
    finally:
        models.restore()
    sink.timing = {"started": started.isoformat(timespec="seconds"), "seconds": round(time.perf_counter() - clock, 3)}
    return Run(sink, config)
