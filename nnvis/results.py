"""A finished run held in memory (nnvis.run's return value): its results, its report on demand.

Nothing is written to disk until `save`; showing the run (or a part of it) renders the report in
a temporary folder that is removed at once, and draws it with the report's own templates
(nnvis_reports.inline).
"""

from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from nnvis.notebook import PARTS, Leaderboard, Shown, framed, result_html
from nnvis_core.contract.artifacts import Result
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.sink import MemorySink
from nnvis_reports.inline import inline_document
from nnvis_reports.reader import model_view
from nnvis_reports.sink import HtmlReport


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
        plugin = next(r.plugin for r in kept.plan.runs if r.plugin.name == plugin)
        return ImageResult(found.artifacts, found.metrics, found.image_artifacts, item.pixels if item else None,
                           {"name": plugin.name, "title": plugin.title, "description": plugin.description})

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

    @contextmanager
    def _saved(self) -> Iterator[Path]:
        """The report saved in a temporary folder, removed afterwards."""
        with tempfile.TemporaryDirectory(prefix="nnvis-show-") as temporary:
            yield self.save(Path(temporary) / "report").parent

    def report(self) -> dict:
        """report.json's content (schema 2, docs/report-format.md)."""
        if self._report is None:
            with self._saved() as folder:
                self._report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        return self._report

    def to_json(self) -> str:
        return json.dumps(self.report(), indent=1, ensure_ascii=False)

    @property
    def leaderboard(self) -> Leaderboard:
        """One row per model and attribution method (nnvis_reports.leaderboard): a list of dicts,
        drawn as the report's table in a notebook."""
        return Leaderboard(self.report()["leaderboard"], self.show("leaderboard"))

    def view(self, model: int = 0) -> dict:
        """report.json as if `model` were the only model (nnvis_reports.reader.model_view)."""
        return model_view(self.report(), model)

    def page(self, part: str = "page", model: int | None = None, image: int | None = None) -> str:
        """The page, or one part of it, as a self-contained document (its pictures inlined once
        each); with `model`, as if that model were the only one."""
        with self._saved() as folder:
            report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
            return inline_document(report if model is None else only_model(report, model), folder, part, image)

    def show_image(self, image: str, model: int | None = None) -> Shown:
        """One image's full detail (its input, predictions and every result of every model), as the
        saved report shows it: the page shown inline leaves it out, to stay light."""
        if image not in self.images:
            raise KeyError(f"no readable image {image!r}; images: {', '.join(self.images[:5])}...")
        index = next(item.record.index for item in self._sink.items if item.record.relpath == image)
        return Shown(lambda: framed(self.page("image", model, index), height=PARTS["page"]))

    def _repr_html_(self) -> str:
        """The whole report, self-contained, in a sandboxed frame."""
        return framed(self.page())

    def show(self, part: str = "page", model: int | None = None) -> Shown:
        """One part of the page, to show in a notebook: page (all of it), leaderboard, folder,
        matrix, dataset (the dataset plugins' views: t-SNE, neighbours...) or model (model plugins'
        pictures); with `model`, one model's view of a comparison."""
        if part not in PARTS:
            raise ValueError(f"show({part!r}): the parts are {', '.join(PARTS)}")
        if model is not None and not 0 <= model < len(self._sink.models):
            raise ValueError(f"show(model={model}): this run has {len(self._sink.models)} models")
        return Shown(lambda: framed(self.page(part, model), height=PARTS[part]))

    def __repr__(self) -> str:
        failed = sum(1 for kept in self._sink.models for results in kept.images.values()
                     for outcome in results.values() if not outcome.ok)
        plugins = ", ".join(r.plugin.name for r in self._sink.models[0].plan.runs) if self._sink.models else ""
        return (f"<nnvis.Run: {len(self.images)} images through {', '.join(self.models)}; plugins {plugins}; "
                f"{failed} failed calls, {len(self._sink.unreadable)} unreadable>")


@dataclass
class ImageResult(Result):
    """A plugin's Result on one image (Run.result), which a notebook draws as the report's card does."""

    pixels: np.ndarray | None = None  # the input as the model saw it, under the maps
    plugin: dict = field(default_factory=dict)  # its plugin's name, title and description, for the card

    def _repr_html_(self) -> str:
        return result_html(self, self.pixels, self.plugin)


def only_model(report: dict, model: int) -> dict:
    """report.json's content with one model of a comparison only: that model's view of the page."""
    label = report["models"][model].get("label")
    return {**report, "models": [report["models"][model]], "by_model": [report["by_model"][model]],
            "leaderboard": [row for row in report.get("leaderboard", []) if row.get("model") in (None, label)]}
