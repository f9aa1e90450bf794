"""The Python face of nnvis: what `nnvis report` does, from a notebook or a script.

    import nnvis
    run = nnvis.run("examples/demo/images", "demo", plugins=["gradcam", "occlusion"], occlusion={"window": 16})
    run                      # in Jupyter: the report inline (leaderboard, matrix, maps)
    run.leaderboard          # the method leaderboard rows
    run.result("circle/circle_00.png", "gradcam").artifacts[0].values   # the map as an array
    run.save("out")          # the report the CLI writes, to out/index.html
    nnvis.explain("demo", "examples/demo/images/circle/circle_00.png", "gradcam").map   # one map, a tensor

The core runs exactly as for the CLI (nnvis_core.runner), into a sink that keeps
every result in memory (nnvis_core.run.sink.MemorySink): nothing is written to disk
until `save`; showing a run inline renders it in a temporary folder that is
removed at once. A model given as an nn.Module is used as it is and left as it
was (its train/eval mode and its device are restored after the run).
"""

from __future__ import annotations

import base64
import html
import json
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image as PILImage

from nnvis_core.contract.artifacts import Heatmap, Result, as_result
from nnvis_core.run.config import ConfigError, ReportConfig, build_config
from nnvis_core.contract.context import ImageItem, RunContext
from nnvis_core.images import ImageReadError, ImageRecord, match_label
from nnvis_core.hook_marker import hookimpl
from nnvis_core.models import ModelOptions, load_model
from nnvis_core.models.loaded import LoadedModel, ModelLoadError, Preprocess
from nnvis_core.models.source import ModelSource
from nnvis_core.contract.params import ParamError, resolve_params
from nnvis_core.run.plan import UsageError
from nnvis_core.contract.plugin import Plugin
from nnvis_core.run.registry import Registry, load_registry
from nnvis_core.runner import choose_device
from nnvis_core.runner import run as run_core
from nnvis_core.run.sink import MemorySink
from nnvis_core.contract.targets import TargetError
from nnvis_reports.assets import save_artifact
from nnvis_reports.reader import model_view
from nnvis_reports.sink import HtmlReport

IN_MEMORY = "python"  # the model source prefix of models given as nn.Module
IN_MEMORY_ROOT = Path("(in memory)")  # the image folder named for images given as PIL images or tensors


# --- models given as objects ------------------------------------------------------------------


class InMemoryModels(ModelSource):
    """`python:N`: the N-th nn.Module this call of nnvis.run was given."""

    name = IN_MEMORY
    description = "a model in memory (nnvis.run and nnvis.explain given an nn.Module)"

    def __init__(self, models: list[LoadedModel]):
        self.models = models

    def load(self, target: str, options: ModelOptions) -> LoadedModel:
        return self.models[int(target)]


def _as_preprocess(preprocess: Preprocess | dict | None) -> Preprocess:
    if isinstance(preprocess, Preprocess):
        return preprocess
    given = dict(preprocess or {})
    unknown = set(given) - {"resize", "crop", "mean", "std"}
    if unknown:
        raise UsageError(f"preprocess: unknown keys {', '.join(sorted(unknown))} (use resize, crop, mean, std)")
    statistics = {k: tuple(given[k]) for k in ("mean", "std") if k in given}
    return Preprocess(given.get("resize", 256), given.get("crop", 224), **statistics)


@dataclass
class _Models:
    """The run's model specs, with modules in memory registered under `python:N`, and their state to restore."""

    specs: list[str]
    registry: Registry
    saved: list[tuple[torch.nn.Module, bool, torch.device | None]]

    def restore(self) -> None:
        for module, training, device in self.saved:
            module.train(training)
            if device is not None:
                module.to(device)


def _inferred(model: torch.nn.Module, weights: Any) -> tuple[Preprocess, list[str], list[str]] | None:
    """(preprocessing, class names, notes) read off torchvision weights (a WeightsEnum member given
    as `weights`) or off a timm model's own pretrained config; None when neither says."""
    if weights is not None and hasattr(weights, "transforms") and hasattr(weights, "meta"):
        from nnvis_core.models.torchvision_source import preprocess_from

        return preprocess_from(weights), list(weights.meta.get("categories") or []), []
    if getattr(model, "pretrained_cfg", None):
        from nnvis_core.models import timm_source

        preprocess, notes = timm_source.preprocess_from(model)
        return preprocess, timm_source.class_names(model), notes
    return None


def _models(models: Sequence[Any], preprocess, class_names, plugins: Sequence[Plugin] = (),
            weights: Any = None) -> _Models:
    loaded: list[LoadedModel] = []
    specs, saved = [], []
    for model in models:
        if isinstance(model, (str, Path)):
            specs.append(str(model))
            continue
        if not isinstance(model, torch.nn.Module):
            raise UsageError(f"model: expected a model spec (str) or a torch.nn.Module, got {type(model).__name__}")
        first = next(iter(model.parameters()), None)
        saved.append((model, model.training, first.device if first is not None else None))
        inferred = _inferred(model, weights) if preprocess is None or class_names is None else None
        chosen = _as_preprocess(preprocess) if preprocess is not None or inferred is None else inferred[0]
        names = list(class_names) if class_names is not None else (inferred[1] if inferred else [])
        described = f"in memory ({weights})" if weights is not None and not isinstance(weights, str) else "in memory"
        notes = inferred[2] if inferred and preprocess is None else []
        loaded.append(LoadedModel(model, type(model).__name__, described, names, chosen, "python (in memory)", notes))
        specs.append(f"{IN_MEMORY}:{len(loaded) - 1}")
    extra = []
    if loaded or plugins:
        holder = type("InMemory", (), {})()
        holder.nnvis_register_model_sources = hookimpl(lambda register: register(InMemoryModels(loaded)))
        holder.nnvis_register_plugins = hookimpl(lambda register: [register(plugin) for plugin in plugins])
        extra.append(("nnvis-python", holder))
    return _Models(specs, load_registry(extra=extra), saved)


# --- images -----------------------------------------------------------------------------------


def to_pil(image: Any) -> PILImage.Image:
    """A PIL image, or an RGB tensor (3, H, W) with values in [0, 1] (or uint8), as an 8-bit RGB image."""
    if isinstance(image, PILImage.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor) and image.dim() == 3 and image.shape[0] == 3:
        values = image.detach().cpu()
        if values.is_floating_point():
            if values.min() < 0 or values.max() > 1:
                raise UsageError("images: a float tensor must hold RGB values in [0, 1], before normalization")
            values = (values * 255).round()
        return PILImage.fromarray(values.to(torch.uint8).permute(1, 2, 0).numpy())
    raise UsageError(f"images: cannot read a {type(image).__name__} {getattr(image, 'shape', '')} as an RGB "
                     f"image (give a folder, image files, PIL images, or RGB tensors (3, H, W) or (N, 3, H, W))")


@contextmanager
def _images(images: Any) -> Iterator[tuple[Path, tuple[ImageRecord, ...]]]:
    """(folder, records in memory) for `images`: a folder as it is; image files as a temporary
    folder of links to them under their parent folder's name (which gives the true class),
    removed afterwards; PIL images and tensors as records in memory, named image_0000.png..."""
    if isinstance(images, (str, Path)):
        yield Path(images), ()
        return
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        images = list(images)
    if isinstance(images, (PILImage.Image, torch.Tensor)):
        images = [images]
    if not isinstance(images, (list, tuple)) or not images:
        raise UsageError("images: give a folder, a list of image files, PIL images or RGB tensors")
    if not all(isinstance(p, (str, Path)) for p in images):
        pictures = [to_pil(image) for image in images]
        yield IN_MEMORY_ROOT, tuple(ImageRecord(i, IN_MEMORY_ROOT / f"image_{i:04d}.png", f"image_{i:04d}.png", None,
                                                image=picture) for i, picture in enumerate(pictures))
        return
    with tempfile.TemporaryDirectory(prefix="nnvis-images-") as temporary:
        root = Path(temporary)
        for number, path in enumerate(Path(p).resolve() for p in images):
            if not path.is_file():
                raise UsageError(f"{path}: no such image file")
            target = root / path.parent.name / path.name
            if target.exists() or target.is_symlink():
                target = target.with_name(f"{path.stem}-{number}{path.suffix}")
            target.parent.mkdir(exist_ok=True)
            target.symlink_to(path)
        yield root, ()


# --- a run --------------------------------------------------------------------------------------


class Run:
    """A finished run: results per image and plugin, the leaderboard, and the report on demand."""

    def __init__(self, sink: MemorySink, config: ReportConfig):
        self._sink = sink
        self._config = config
        self._report: dict | None = None

    @property
    def models(self) -> list[str]:
        return [kept.plan.ctx.model.name for kept in self._sink.models]

    @property
    def images(self) -> list[str]:
        """The readable images' paths, relative to the image folder, in report order."""
        return [item.record.relpath for item in self._sink.items]

    @property
    def unreadable(self) -> dict[str, str]:
        return dict(self._sink.unreadable)

    @property
    def reused(self) -> int:
        """Results taken from the cache (nnvis.run's `cache`) instead of computed."""
        return self._sink.outcome.reused if self._sink.outcome else 0

    def result(self, image: str, plugin: str, model: int = 0) -> "ImageResult":
        """One plugin's Result on one image (artifacts with their arrays, metrics): raises KeyError
        naming what exists, and RuntimeError with the plugin's message when the call failed."""
        kept = self._sink.models[model]
        if image not in kept.images:
            raise KeyError(f"no readable image {image!r}; images: {', '.join(list(kept.images)[:5])}...")
        outcome = kept.images[image].get(plugin) or kept.global_results.get(plugin)
        if outcome is None:
            raise KeyError(f"plugin {plugin!r} has no result on {image!r}; ran: "
                           f"{', '.join(r.plugin.name for r in kept.plan.runs)}")
        if not outcome.ok:
            raise RuntimeError(f"{plugin} failed on {image}: {outcome.error}")
        item = next((i for i in kept.items if i.record.relpath == image), None)
        found = outcome.result
        return ImageResult(found.artifacts, found.metrics, found.image_artifacts, item.pixels if item else None)

    def dataset_result(self, plugin: str, model: int = 0) -> Result:
        """A dataset- or model-scope plugin's Result (t-SNE, sanity check...)."""
        outcome = self._sink.models[model].global_results[plugin]
        if not outcome.ok:
            raise RuntimeError(f"{plugin} failed: {outcome.error}")
        return outcome.result

    def save(self, out: str | Path, force: bool = False) -> Path:
        """Write the report the CLI writes (index.html, report.json, assets/) to `out`; return index.html."""
        out = Path(out)
        self._sink.replay(HtmlReport(out, force))
        return out / "index.html"

    def report(self) -> dict:
        """report.json's content (schema 2, docs/report-format.md)."""
        if self._report is None:
            with tempfile.TemporaryDirectory(prefix="nnvis-run-") as temporary:
                self.save(Path(temporary) / "report")
                self._report = json.loads((Path(temporary) / "report" / "report.json").read_text(encoding="utf-8"))
        return self._report

    def to_json(self) -> str:
        return json.dumps(self.report(), indent=1, ensure_ascii=False)

    @property
    def leaderboard(self) -> "Leaderboard":
        """One row per model and attribution method (nnvis_reports.leaderboard): a list of dicts,
        drawn as the report's table in a notebook."""
        return Leaderboard(self.report()["leaderboard"], self.show("leaderboard"))

    def view(self, model: int = 0) -> dict:
        """report.json as if `model` were the only model (nnvis_reports.reader.model_view)."""
        return model_view(self.report(), model)

    def page(self) -> str:
        """index.html, self-contained: every picture it shows inlined as a data URI."""
        with tempfile.TemporaryDirectory(prefix="nnvis-show-") as temporary:
            index = self.save(Path(temporary) / "report")
            return inline_files(index.read_text(encoding="utf-8"), index.parent)

    def _repr_html_(self) -> str:
        """The whole report, self-contained, in a sandboxed frame."""
        return framed(self.page())

    def show(self, part: str) -> "Shown":
        """One part of the page, to show in a notebook: leaderboard, folder, matrix, dataset
        (the dataset plugins' views: t-SNE, neighbours...) or model (model plugins' pictures)."""
        if part not in PARTS:
            raise ValueError(f"show({part!r}): the parts are {', '.join(PARTS)}")
        return Shown(lambda: framed(page_part(self.page(), part), height=PARTS[part]))

    def __repr__(self) -> str:
        failed = sum(1 for kept in self._sink.models for results in kept.images.values()
                     for outcome in results.values() if not outcome.ok)
        plugins = ", ".join(r.plugin.name for r in self._sink.models[0].plan.runs) if self._sink.models else ""
        return (f"<nnvis.Run: {len(self.images)} images through {', '.join(self.models)}; plugins {plugins}; "
                f"{failed} failed calls, {len(self._sink.unreadable)} unreadable>")


PARTS = {"leaderboard": 700, "folder": 700, "matrix": 800, "dataset": 900, "model": 900}  # frame heights (px)


class Shown:
    """Something shown inline in a notebook (its HTML is made when asked for)."""

    def __init__(self, make) -> None:
        self._make = make

    def _repr_html_(self) -> str:
        return self._make()


class Leaderboard(list):
    """The leaderboard rows (dicts), shown in a notebook as the report's sortable table."""

    def __init__(self, rows: list[dict], shown: Shown):
        super().__init__(rows)
        self._shown = shown

    def _repr_html_(self) -> str:
        return self._shown._repr_html_()


def framed(page: str, height: int = 900) -> str:
    """A page in a sandboxed frame: scripts run in it, but cannot reach the notebook."""
    return (f'<iframe class="nnvis-report" sandbox="allow-scripts" style="width: 100%; height: {height}px; '
            f'border: 1px solid #ddd" srcdoc="{html.escape(page, quote=True)}"></iframe>')


def page_part(page: str, part: str) -> str:
    """The page with one section of it in the body (its head and scripts kept)."""
    found = re.search(rf'<section id="{part}"[^>]*>.*?</section>', page, re.S)
    head = page[:page.index("<body>") + len("<body>")]
    scripts = re.search(r"<script>(?:(?!<script>).)*</script>\s*<footer>", page, re.S)
    body = found[0] if found else f"<p>This run has no {part} to show.</p>"
    return head + body + (scripts[0].rsplit("<footer>", 1)[0] if scripts else "") + "</body></html>"


INLINED = re.compile(r"(?<![\w/.])(assets/[\w./-]+\.png)")


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def inline_files(page: str, root: Path) -> str:
    """`page` with every assets/...png it names (in attributes and in its JSON data) as a data URI."""
    cache: dict[str, str] = {}

    def inline(match: re.Match) -> str:
        path = match[1]
        if path not in cache:
            cache[path] = data_uri(root / path) if (root / path).is_file() else path
        return cache[path]

    return INLINED.sub(inline, page)


def run(images: Any, model: Any = "demo", plugins: Sequence[str | Plugin] | None = None, *,
        masks: str | Path | None = None, labels: str | Path | None = None, weights: Any = None,
        arch: str | list[str] | None = None, compare: Sequence[Any] = (), preprocess: Preprocess | dict | None = None,
        class_names: Sequence[str] | None = None, trust_checkpoint: bool = False, device: str = "auto",
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
    torch.nn.Module (with `preprocess`, default resize 256 / crop 224 / ImageNet statistics, and
    `class_names`), both read off `weights` when it is a torchvision WeightsEnum member, or off a
    timm model's pretrained config, when not given; a list of them: side by side, as `--model`
    given more than once (compare: more models, the same).
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
    chosen = list(model) if isinstance(model, (list, tuple)) else [model]
    models = _models([*chosen, *compare], preprocess, class_names, given, weights)
    weights = weights if isinstance(weights, (str, list, tuple)) or weights is None else None  # an enum served the module
    try:
        with _images(images) as (folder, records):
            try:
                config = build_config(
                    folder, Path(tempfile.gettempdir()) / "nnvis-python-run-unused", model=models.specs,
                    weights=list(weights) if isinstance(weights, tuple) else weights, arch=arch, labels=labels,
                    masks=masks, trust_checkpoint=trust_checkpoint, plugins=names, params=params, device=device,
                    seed=seed, batch_size=batch_size, resize=resize, crop=crop, mean=mean, std=std,
                    plugin_timeout=plugin_timeout, engine=engine, address=address, workers=workers,
                    gpus_per_worker=gpus_per_worker, jobs=jobs, quiet=True, images=records)
            except (ConfigError, ParamError) as error:
                raise UsageError(str(error)) from None
            sink = MemorySink(cache_dir=Path(cache) if cache is not None else None)
            run_core(config, models.registry, sink, _progress if progress else None)
    finally:
        models.restore()
    return Run(sink, config)


def _progress(total: int, status=lambda: ""):
    """A bar that draws in notebooks and terminals alike (tqdm.auto); the engine has nothing to add
    here (nnvis.run computes in this process)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="images x plugins", leave=False)

    def advance(n: int) -> None:
        bar.update(n)
        if bar.n >= total:
            bar.close()

    return advance


# --- one map ------------------------------------------------------------------------------------


@dataclass
class Explained:
    """One method on one image: `map` is the (H, W) map the card draws, as a tensor."""

    map: torch.Tensor
    target: int
    target_name: str
    predicted: int
    result: Result
    pixels: np.ndarray | None = None  # the input as the model saw it (H, W, 3), under the drawn map

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.result.metrics)

    @property
    def caption(self) -> str:
        return next((a.caption for a in self.result.artifacts if isinstance(a, Heatmap)), "")

    def _repr_html_(self) -> str:
        """The map over the input, as the report draws it, with its caption and metrics."""
        return result_html(self.result, self.pixels)


@dataclass
class ImageResult(Result):
    """A plugin's Result on one image (Run.result), which a notebook draws as the report's card does."""

    pixels: np.ndarray | None = None  # the input as the model saw it, under the maps

    def _repr_html_(self) -> str:
        return result_html(self, self.pixels)


def result_html(result: Result, pixels: np.ndarray | None) -> str:
    """A result's pictures (maps over the input, images, categorical maps) inlined, each with its title
    and caption, the other artifacts named, and the metrics; self-contained and escaped."""
    parts = []
    with tempfile.TemporaryDirectory(prefix="nnvis-result-") as temporary:
        root = Path(temporary)
        for number, artifact in enumerate(result.artifacts):
            saved = save_artifact(artifact, root, f"artifact-{number}", pixels, root)
            caption = f"<strong>{html.escape(artifact.title)}</strong>" + (
                f": {html.escape(artifact.caption)}" if artifact.caption else "")
            if saved["kind"] in ("image", "heatmap", "categorical"):
                parts.append(f'<figure style="display: inline-block; margin: 0 8px 8px 0; max-width: 200px">'
                             f'<img src="{data_uri(root / saved["path"])}" width="192" height="192" '
                             f'style="image-rendering: pixelated" alt="{html.escape(artifact.title)}">'
                             f"<figcaption>{caption}</figcaption></figure>")
            else:
                parts.append(f"<p>{caption} ({html.escape(saved['kind'])}: in the saved report)</p>")
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{v:.4g}</td></tr>" for k, v in result.metrics.items())
    return "<div class=\"nnvis-result\">" + "".join(parts) + (f"<table>{rows}</table>" if rows else "") + "</div>"


def explain(model: Any, image: Any, method: str = "gradcam", target: str | int = "predicted", *,
            weights: Any = None, preprocess: Preprocess | dict | None = None,
            class_names: Sequence[str] | None = None, device: str = "auto", seed: int = 0, **params: Any) -> Explained:
    """One attribution method on one image (a file, a PIL image or an RGB tensor (3, H, W) in [0, 1]),
    the one-liner: the map as a tensor, the target, the metrics.

    target: predicted, true (from the file's folder name), a class index or a class name.
    """
    models = _models([model], preprocess, class_names, weights=weights)
    weights = weights if isinstance(weights, str) or weights is None else None
    registry = models.registry
    try:
        if method not in registry.plugins:
            raise UsageError(f"unknown method {method!r}; installed: {', '.join(registry.plugins)}")
        plugin = registry.plugins[method].item
        try:
            values = resolve_params(method, plugin.params, {**params, **({"target": str(target)}
                                                                         if "target" in {p.name for p in plugin.params} else {})})
        except ParamError as error:
            raise UsageError(str(error)) from None
        resolved = choose_device(device)
        try:
            loaded = load_model(models.specs[0], ModelOptions(weights=weights, seed=seed), registry, str(resolved))
        except ModelLoadError as error:
            raise UsageError(str(error)) from None
        ctx = RunContext(loaded, resolved, seed, 16, None, {n: r.item for n, r in registry.plugins.items()})
        item = _item(ctx, image)
        torch.manual_seed(ctx.seed_for(item, method))
        try:
            result = as_result(plugin.run_image(ctx, item, values))
        except TargetError as error:
            raise UsageError(f"{method}.target: {error}") from None
        heatmap = next((a for a in result.artifacts if isinstance(a, Heatmap)), None)
        if heatmap is None:
            raise UsageError(f"{method} draws no map (its first result is a {type(result.artifacts[0]).__name__})")
        chosen = ctx.target(item, str(values.get("target", "predicted")))
        return Explained(torch.as_tensor(heatmap.values), chosen, ctx.class_names[chosen], item.predicted, result,
                         item.pixels)
    finally:
        models.restore()


def _item(ctx: RunContext, image: Any) -> ImageItem:
    """One image as the model sees it, with the model's prediction."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        record = ImageRecord(0, path, path.name, path.parent.name or None)
    else:
        record = ImageRecord(0, IN_MEMORY_ROOT / "image_0000.png", "image_0000.png", None, image=to_pil(image))
    preprocess = ctx.model.preprocess
    try:
        pixels = preprocess.display(record.read())
    except ImageReadError as error:
        raise UsageError(str(error)) from None
    tensor = preprocess.normalize(pixels)
    with torch.no_grad():
        probabilities = torch.softmax(ctx.module(tensor[None].to(ctx.device)).float(), dim=1)[0].cpu()
    return ImageItem(record, pixels, tensor, match_label(record.folder, ctx.class_names), probabilities)


__all__ = ["Explained", "ImageResult", "Leaderboard", "Run", "Shown", "UsageError", "explain", "inline_files", "run"]
