"""A test kit for plugin authors: run a plugin on the demo model and check it against the contract.

Use it from pytest (or any test runner); a broken contract raises ContractError,
an AssertionError whose message lists every problem found:

    from nnvis_core.testing import check_installed, check_plugin
    from nnvis_brightness import Brightness

    def test_brightness_follows_the_contract():
        check = check_plugin(Brightness(), params={"gamma": 2.0})
        assert check.artifacts("circle/circle_00.png")[0].title == "brightness"

    def test_brightness_is_installed():
        check_installed("brightness")

`check_plugin` writes a few demo images, runs a real report with only this
plugin (the same code path as `nnvis report`), and checks: the declaration;
that every call returns valid artifacts without raising; that each call leaves
the model as it found it (modes, hooks, requires_grad, weights); that a call
repeated with the same seed gives the same output; that overlay maps match the
input's shape; that scatter points link to existing images.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tempfile
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image as PILImage

from nnvis_core.contract.artifacts import Artifact, Result, Scatter, as_result
from nnvis_core.contract.conformance import hook_keys, hooks_changed
from nnvis_core.contract.context import ImageItem, RunContext
from nnvis_core.contract.params import Param
from nnvis_core.contract.plugin import Plugin, Scope, hookimpl
from nnvis_core.models.loaded import LoadedModel
from nnvis_core.models.source import ModelSource
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import Registered, Registry, load_registry, registration_problems

BUILTIN_SERVICES = ("model_sources", "html_report")  # nnvis's entry points that are not visualization plugins
RUN_METHOD = {Scope.IMAGE: "run_image", Scope.DATASET: "run_dataset", Scope.MODEL: "run_model"}
_PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ContractError(AssertionError):
    """A plugin breaks the nnvis plugin contract; the message lists each problem."""


@dataclass
class PluginCheck:
    """What a passing check saw: each call's Result, report.json, and the report folder.

    report is report.json with the model's section (`by_model[0]`) laid over its top level,
    so that report["images"] and report["plugins"] are the model's.

    results is keyed by image path relative to the image folder ('circle/circle_00.png'),
    or by None for the one call of a dataset- or model-scope plugin.
    out_dir is removed after a passing check unless you passed one.
    """

    plugin: Plugin
    params: dict[str, Any]
    results: dict[str | None, Result]
    report: dict
    out_dir: Path

    def artifacts(self, image: str | None = None) -> list[Artifact]:
        """The artifacts of one call: an image's relative path, or None for dataset/model scope."""
        if image not in self.results:
            raise KeyError(f"no call for {image!r}; calls: {sorted(map(str, self.results))}")
        return self.results[image].artifacts


def write_demo_images(folder: Path, images: int = 4, seed: int = 2024) -> tuple[Path, Path]:
    """Write `images` generated demo images (one per class, in class folders) and their masks.

    Returns (image folder, mask folder), laid out as `nnvis report` expects.
    """
    from nnvis_core.demo.shapes import CLASS_NAMES, draw_sample

    rng = np.random.default_rng(seed)
    image_dir, mask_dir = Path(folder) / "images", Path(folder) / "masks"
    for number in range(images):
        class_index = number % len(CLASS_NAMES)
        name = CLASS_NAMES[class_index]
        pixels, mask, _ = draw_sample(rng, 64, class_index)
        filename = f"{name}_{number // len(CLASS_NAMES):02d}.png"
        for root, picture in ((image_dir, PILImage.fromarray(pixels, mode="RGB")),
                              (mask_dir, PILImage.fromarray(mask.astype(np.uint8) * 255, mode="L"))):
            (root / name).mkdir(parents=True, exist_ok=True)
            picture.save(root / name / filename)
    return image_dir, mask_dir


def demo_items(folder: Path, images: int = 4, seed: int = 0) -> tuple[RunContext, list[ImageItem]]:
    """The demo model's RunContext and `images` ImageItems, for calling a plugin's run method directly.

    folder receives the generated image files.
    """
    from nnvis_core.contract.stream import stream_items
    from nnvis_core.images import discover_images
    from nnvis_core.models import ModelOptions, load_model

    image_dir, mask_dir = write_demo_images(folder, images)
    model = load_model("demo", ModelOptions(), _demo_registry(), "cpu")
    ctx = RunContext(model, torch.device("cpu"), seed, 16, mask_dir)
    items = [item for batch in stream_items(discover_images(image_dir), ctx) for item in batch]
    return ctx, items


def declaration_problems(plugin: Any) -> list[str]:
    """Everything wrong with a plugin's declaration, all at once (empty when nothing is)."""
    problems = registration_problems(plugin)
    if not isinstance(plugin, Plugin):
        return problems
    method = RUN_METHOD.get(plugin.scope) if isinstance(plugin.scope, Scope) else None
    if method and getattr(type(plugin), method) is getattr(Plugin, method):
        problems.append(f"scope is Scope.{plugin.scope.name} but {type(plugin).__name__} does not define {method}()")
    for param in (p for p in plugin.params if isinstance(p, Param)):
        if not _PARAM_NAME.match(param.name):
            problems.append(f"parameter name {param.name!r} must match {_PARAM_NAME.pattern} (it is typed in --set)")
        if param.type not in (int, float, bool, str):
            problems.append(f"parameter {param.name}: type must be int, float, bool or str, not {param.type!r}")
            continue
        if not param.help.strip():
            problems.append(f"parameter {param.name} has no help text (shown in the report and error messages)")
        if param.default is not None:
            try:
                if param.coerce(param.default) != param.default:
                    raise ValueError("changed by its own type")
            except ValueError as error:
                problems.append(f"parameter {param.name}: default {param.default!r} is not accepted ({error})")
    return problems


def check_declaration(plugin: Any) -> None:
    """Raise ContractError when the plugin's class attributes or parameters break the contract."""
    problems = declaration_problems(plugin)
    if problems:
        raise ContractError(_message(plugin, problems))


def check_plugin(
    plugin: Plugin,
    params: dict[str, Any] | None = None,
    *,
    images: int = 4,
    seed: int = 0,
    time_limit: float = 120.0,
    device: str = "cpu",
    out_dir: Path | None = None,
    model: torch.nn.Module | None = None,
    concepts: Path | None = None,
) -> PluginCheck:
    """Run `plugin` in a report on `images` demo images and check every call against the contract.

    params: values as a user would set them (`--set` strings or TOML values).
    time_limit: seconds each call may take (the kit runs each call twice, to check determinism).
    device: where the demo model runs (cpu, cuda, ...).
    out_dir: where the report goes (kept); by default a temporary folder, removed
    when the check passes and named in the error when it does not.
    model: run on this module instead of the demo convnet, for a plugin that applies
    only to some models (a transformer method): it sees the demo images with the
    demo's preprocessing (64 px) and class names, so it must give one output per class.
    concepts: a folder of concept images (--concepts), for a plugin that reads them.
    Returns a PluginCheck; raises ContractError listing every problem.
    """
    from nnvis_core.runner import UsageError, run

    check_declaration(plugin)
    given = dict(params or {})
    keep = out_dir is not None
    work = Path(out_dir) if keep else Path(tempfile.mkdtemp(prefix=f"nnvis-check-{plugin.name}-"))
    image_dir, mask_dir = write_demo_images(work / "input", images)
    recorder = _Recorder(plugin)
    registry = _demo_registry(recorder, model=model)
    config = ReportConfig(image_dir, work / "report", plugins=[plugin.name], params={plugin.name: given},
                          model="demo" if model is None else GIVEN_MODEL,
                          masks=mask_dir, concepts=concepts, device=device, seed=seed, plugin_timeout=time_limit,
                          quiet=True)
    try:
        run(config, registry, registry.sinks["html"].item.create(config))
    except UsageError as error:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        raise ContractError(f"plugin {plugin.name!r} cannot run: {error}") from None
    report = json.loads((work / "report" / "report.json").read_text(encoding="utf-8"))
    report = {**report, **report["by_model"][0]}  # the one model's section at the top level (schema 2)
    problems = _failed_calls(plugin, report) + recorder.problems + _unlinked_points(recorder.results, report)
    if problems:
        raise ContractError(_message(plugin, _summarize(problems), work / "report", len(problems)))
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    run_params = next(p["params"] for p in report["plugins"] if p["name"] == plugin.name)
    return PluginCheck(plugin, run_params, recorder.results, report, work / "report")


def check_installed(name: str) -> Registered:
    """The plugin called `name` as `nnvis` finds it through the `nnvis` entry points.

    Raises ContractError when it is not found, with every load failure and the installed names.
    """
    registry = load_registry()
    if name in registry.plugins:
        return registry.plugins[name]
    lines = [f"plugin {name!r} is not found through the 'nnvis' entry-point group."]
    for failure in registry.failures:
        lines.append(f"  - {failure.name} ({failure.distribution}) did not load: {failure.error}")
    lines.append(f"  installed: {', '.join(registry.plugins) or 'none'}")
    lines.append("  Is the package installed (pip install -e .), and does its pyproject.toml declare the "
                 "module under [project.entry-points.nnvis]?")
    raise ContractError("\n".join(lines))


# --- internals ----------------------------------------------------------------------------------


def _demo_registry(*plugins: Plugin, model: torch.nn.Module | None = None) -> Registry:
    """The built-in model sources, the HTML report and the given plugins; no other installed plugin.
    With `model`, a source named GIVEN_MODEL serves it."""
    holder = types.SimpleNamespace(nnvis_register_plugins=hookimpl(lambda register: [register(p) for p in plugins]))
    if model is not None:
        holder.nnvis_register_model_sources = hookimpl(lambda register: register(_GivenModel(model)))
    registry = load_registry(only=BUILTIN_SERVICES, extra=[("checked", holder)])
    if registry.failures:
        raise ContractError("; ".join(f.error for f in registry.failures))
    if "html" not in registry.sinks:
        raise ContractError("nnvis's HTML report (entry point html_report) is not installed: reinstall nnvis")
    return registry


GIVEN_MODEL = "checked-model"


class _GivenModel(ModelSource):
    """The module passed to check_plugin, with the demo's preprocessing and class names."""

    name = GIVEN_MODEL
    description = "the model given to nnvis_core.testing.check_plugin"

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def load(self, target: str, options) -> LoadedModel:
        from nnvis_core.demo import CLASS_NAMES
        from nnvis_core.models.sources import demo_preprocess

        return LoadedModel(self.module, "checked model", "given", list(CLASS_NAMES), demo_preprocess(), "check_plugin")


def _summarize(problems: list[tuple[str, str]]) -> list[str]:
    """The first problems of each kind in full (three failures, one of anything else), then a count."""
    shown: dict[str, list[str]] = {}
    totals: dict[str, int] = {}
    for kind, text in problems:
        totals[kind] = totals.get(kind, 0) + 1
        if len(shown.setdefault(kind, [])) < (3 if kind == "failed" else 1):
            shown[kind].append(text)
    lines = []
    for kind, texts in shown.items():
        lines.extend(texts)
        if totals[kind] > len(texts):
            lines.append(f"... and {totals[kind] - len(texts)} more call(s) with the same kind of problem ({kind})")
    return lines


def _message(plugin: Any, problems: list[str], report: Path | None = None, count: int | None = None) -> str:
    name = getattr(plugin, "name", type(plugin).__name__)
    count = len(problems) if count is None else count
    where = f"; report kept in {report}" if report else ""
    head = f"plugin {name!r} breaks the nnvis plugin contract ({count} problem{'s' * (count > 1)}{where}):"
    return "\n".join([head] + [textwrap.indent(problem, "    ").replace("    ", "  - ", 1) for problem in problems])


def _failed_calls(plugin: Plugin, report: dict) -> list[tuple[str, str]]:
    method = RUN_METHOD[plugin.scope]
    entries = [(image["path"], image["results"].get(plugin.name)) for image in report["images"]]
    entries += [(None, section.get(plugin.name)) for section in (report["dataset"], report["model_results"])]
    problems = []
    for path, entry in entries:
        if entry and entry["status"] == "error":
            where = f"{method} on {path}" if path else method
            trace = f"\n{entry['traceback'].rstrip()}" if entry.get("traceback") else ""
            problems.append(("failed", f"{where} failed: {entry['error']}{trace}"))
    return problems


def _unlinked_points(results: dict[str | None, Result], report: dict) -> list[tuple[str, str]]:
    known = {image["index"] for image in report["images"]}
    problems = []
    for where, result in results.items():
        for artifact in result.artifacts:
            if isinstance(artifact, Scatter):
                bad = sorted({i for i in artifact.image_ids if i is not None and i not in known})
                if bad:
                    problems.append(("scatter", f"{_where(where)}: scatter '{artifact.title}' links to images "
                                     f"{bad[:5]}, which the report does not have (use item.record.index)"))
    return problems


def _where(image: str | None) -> str:
    return f"call on {image}" if image else "call"


class _Recorder(Plugin):
    """Stands in for the plugin under test: calls it, records each Result, and checks
    that the model is left unchanged and that a repeated call gives the same output."""

    def __init__(self, inner: Plugin):
        self.inner = inner
        for attr in ("name", "title", "description", "scope", "params", "api_version", "default_enabled"):
            setattr(self, attr, getattr(inner, attr))
        self.results: dict[str | None, Result] = {}
        self.problems: list[tuple[str, str]] = []  # (kind, message)

    # What the run asks before it calls the plugin: the plugin's own answers, so that the check runs it as a
    # report would (a plugin that does not apply, or needs a parameter, is refused here too).
    def applies_to(self, ctx):
        return self.inner.applies_to(ctx)

    def applies_with(self, ctx, params):
        return self.inner.applies_with(ctx, params)

    def check_params(self, params, plugins):
        return self.inner.check_params(params, plugins)

    def default_layers(self, model):
        return self.inner.default_layers(model)

    def run_image(self, ctx, item, params):
        return self._call(ctx, item, lambda: self.inner.run_image(ctx, item, dict(params)))

    def run_dataset(self, ctx, items, params):
        return self._call(ctx, None, lambda: self.inner.run_dataset(ctx, items, dict(params)))

    def run_model(self, ctx, params):
        return self._call(ctx, None, lambda: self.inner.run_model(ctx, dict(params)))

    def _call(self, ctx: RunContext, item: ImageItem | None, invoke: Callable[[], object]) -> Result:
        where = item.record.relpath if item else None
        before = model_state(ctx.module)
        try:
            returned = invoke()
        finally:  # checked when the call raises too: that is when cleanup is most often forgotten
            after = model_state(ctx.module)
            # A hook left behind fails the call in the run itself (nnvis_core.run.calls), which names it.
            leaked = any(new - before["hooks"].get(place, frozenset()) for place, new in after["hooks"].items())
            changes = model_changes(before, after, left_hooks=False)
            if changes:
                self.problems.append(("model", f"{_where(where)} left the model changed (restore it in a "
                                      f"finally block): " + "; ".join(changes)))
        result = as_result(returned)  # a bad result raises here and becomes an error entry
        if leaked:  # the run fails this call; a second call for the determinism check would leave more
            return result
        # Overlay maps of another aspect ratio are refused by the run itself (call_plugin), as in a report.
        torch.manual_seed(ctx.seed_for(item, self.name))  # as the runner seeded the first call
        difference = result_difference(result, as_result(invoke()))
        if difference:
            self.problems.append(("determinism",
                f"{_where(where)} is not deterministic: {difference} between two calls with the same seed "
                f"(draw random numbers from torch, which nnvis seeds per call, or from "
                f"numpy.random.default_rng(ctx.seed_for(item, plugin_name)))"
            ))
        self.results[where] = result
        return result


def model_state(module: torch.nn.Module) -> dict[str, Any]:
    """A snapshot of what a plugin may change by mistake: modes, hooks, requires_grad, weights, buffers."""
    return {
        "training": {name: m.training for name, m in module.named_modules()},
        "hooks": hook_keys(module),  # the module's and torch's global hooks, as the run sees them
        "requires_grad": {name: p.requires_grad for name, p in module.named_parameters()},
        "tensors": {name: t.detach().clone() for name, t in
                    [*module.named_parameters(), *module.named_buffers()]},
    }


def model_changes(before: dict[str, Any], after: dict[str, Any], left_hooks: bool = True) -> list[str]:
    """Human-readable differences between two model_state snapshots (without hooks left behind
    when `left_hooks` is False: the run reports those itself)."""
    changes = []
    for name, mode in after["training"].items():
        if before["training"].get(name) != mode:
            changes.append(f"module '{name or '(root)'}' was left in {'train' if mode else 'eval'} mode")
    changes.extend(hooks_changed(before["hooks"], after["hooks"], left=left_hooks))
    for name, flag in after["requires_grad"].items():
        if before["requires_grad"].get(name) != flag:
            changes.append(f"requires_grad of '{name}' changed to {flag}")
    for name, tensor in after["tensors"].items():
        old = before["tensors"].get(name)
        if old is None or old.shape != tensor.shape or not torch.equal(old, tensor):
            changes.append(f"values of '{name}' changed")
    return changes[:10]


def result_difference(first: Result, second: Result) -> str | None:
    """How two Results differ (kinds, titles, data, metrics), or None when they agree."""
    if [(a.kind, a.title) for a in first.artifacts] != [(b.kind, b.title) for b in second.artifacts]:
        return "different artifacts"
    for a, b in zip(first.artifacts, second.artifacts):
        for field in (name for name in vars(a) if name not in ("title", "caption")):
            if not _same(getattr(a, field), getattr(b, field)):
                return f"{a.kind} '{a.title}' ({field}) differs"
    if not _same(first.metrics, second.metrics):
        return "metrics differ"
    return None


def _same(x: Any, y: Any) -> bool:
    """Equal, with numbers and arrays compared to a relative tolerance of 1e-5."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):  # a ConceptAtlas's concepts
        return type(x) is type(y) and all(_same(getattr(x, f.name), getattr(y, f.name))
                                          for f in dataclasses.fields(x))
    if isinstance(x, dict) or isinstance(y, dict):
        return (isinstance(x, dict) and isinstance(y, dict) and x.keys() == y.keys()
                and all(_same(x[key], y[key]) for key in x))
    if isinstance(x, (list, tuple)) or isinstance(y, (list, tuple)):
        return (isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)) and len(x) == len(y)
                and all(map(_same, x, y)))
    if isinstance(x, (np.ndarray, np.number, torch.Tensor, int, float)) and not isinstance(x, bool):
        try:
            a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError):
            return False
        return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True))
    return bool(x == y)
