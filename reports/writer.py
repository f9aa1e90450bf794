"""Collects results as they stream in and writes report.json and index.html at the end.

Files for each result are written as soon as it arrives, and each image's entry
goes to an on-disk store (nnvis_reports.image_store) once its last result is in,
so memory holds only the entries of the images still being computed, never the
pictures, and does not grow with the folder.
"""

from __future__ import annotations

import json
import math
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

import nnvis_core
from nnvis_core.contract.context import ImageItem
from nnvis_core.images import ImageRecord
from nnvis_core.run.plan import CallOutcome, PluginRun, RunPlan
from nnvis_core.toolkit import AttributionPlugin
from nnvis_reports.assets import save_artifact, save_png, save_sprites
from nnvis_reports.image_store import ImageStore, images_json
from nnvis_reports.leaderboard import leaderboard
from nnvis_reports.reader import model_view

SCHEMA_VERSION = 2  # 2: results per model, in by_model[] (nnvis_reports.reader reads both)
REPORT_FORMAT = "nnvis-report"  # marks a folder as an nnvis report (nnvis_reports.output.is_report)
TOP_K = 5


def engine_workers(config) -> int | None:
    """The workers the image-scope calls ran on: Ray's --workers, or the local engine's --jobs
    processes (None: this process alone, or Ray's default)."""
    if config.engine == "local":
        return config.jobs if config.jobs > 1 else None
    return config.workers


def _versions() -> dict:
    import PIL
    import torch

    versions = {"nnvis": nnvis_core.__version__, "python": sys.version.split()[0], "torch": torch.__version__,
                "numpy": np.__version__, "pillow": PIL.__version__, "platform": platform.platform()}
    try:  # from the installed metadata: the same whether or not this run happened to import torchvision
        versions["torchvision"] = metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        versions["torchvision"] = None
    return versions


def model_labels(models: list[dict]) -> list[str]:
    """A name per model that tells it from the others: its name, with its weights where two
    share a name, with its position where even that is not enough."""
    names = [m["name"] for m in models]
    labels = [name if names.count(name) == 1 else f"{name} ({m.get('weights')})" for name, m in zip(names, models)]
    return [label if labels.count(label) == 1 else f"{label} #{k + 1}" for k, label in enumerate(labels)]


class MetricStats:
    """Mean, standard deviation and range of one metric, added up image by image (Welford's
    update), so that nothing is kept per image."""

    def __init__(self) -> None:
        self.n, self.total, self.mean, self.squares = 0, 0.0, 0.0, 0.0
        self.low, self.high = math.inf, -math.inf

    def add(self, value: float) -> None:
        self.n += 1
        self.total += value
        delta = value - self.mean
        self.mean += delta / self.n
        self.squares += delta * (value - self.mean)
        self.low, self.high = min(self.low, value), max(self.high, value)

    def summary(self) -> dict:
        return {"mean": self.total / self.n, "std": math.sqrt(max(self.squares, 0.0) / self.n),
                "min": self.low, "max": self.high, "n": self.n}


class ModelSection:
    """One model's part of the report, in report.json's `by_model[]` shape: its plugins, its
    images' predictions and results, its dataset and model results. The first model's files
    go under assets/, model k's under assets/model-k/."""

    def __init__(self, root: Path, plan: RunPlan):
        ctx, runs, records = plan.ctx, plan.runs, plan.records
        self.root = root
        self.assets = root / "assets" / (f"model-{plan.model_index}" if plan.model_index else "")
        self.assets.mkdir(parents=True, exist_ok=True)
        self.ctx = ctx
        self.runs = runs
        self.skipped = [{"name": s.name, "reason": s.reason} for s in plan.skipped]
        self.images = ImageStore((self._pending(record) for record in records), root)
        self.open: dict[int, dict] = {}  # entries of images whose results are still coming in
        self.image_runs = {run.plugin.name for run in runs if run.plugin.scope.value == "image"}
        self.dataset_results: dict[str, dict] = {}
        self.model_results: dict[str, dict] = {}
        self.stats = {run.plugin.name: {"seconds": 0.0, "calls": 0, "failures": 0} for run in runs}
        self.metric_stats: dict[str, dict[str, MetricStats]] = {run.plugin.name: {} for run in runs}
        self.model = {**ctx.model.describe(), "device": str(ctx.device), "notes": list(ctx.model.notes)}

    @staticmethod
    def _pending(record: ImageRecord) -> dict:
        return {"index": record.index, "path": record.relpath, "folder": record.folder, "status": "pending",
                "error": None, "input": None, "true_class": None, "predictions": [], "results": {}}

    def _folder(self, record: ImageRecord) -> Path:
        return self.assets / f"img-{record.index:05d}"

    def _entry(self, index: int) -> dict:
        """Image `index`'s entry, to change: it stays in memory until _settle stores it."""
        if index not in self.open:
            self.open[index] = self.images[index]
        return self.open[index]

    def _peek(self, index: int) -> dict:
        """Image `index`'s entry as it stands, to read."""
        return self.open[index] if index in self.open else self.images[index]

    def _settle(self, index: int, finished: bool = False) -> None:
        """Store image `index`'s entry once every image-scope plugin has its result (or when `finished`)."""
        entry = self.open[index]
        if finished or entry["status"] != "ok" or self.image_runs <= entry["results"].keys():
            self.images[index] = self.open.pop(index)

    def settle_all(self) -> None:
        """Store every entry still in memory (results that never came leave their image as it is)."""
        for index in list(self.open):
            self._settle(index, finished=True)

    def add_unreadable(self, record: ImageRecord, reason: str) -> None:
        self._entry(record.index).update(status="unreadable", error=reason)
        self._settle(record.index)

    def add_image(self, item: ImageItem) -> None:
        class_names = self.ctx.class_names
        folder = self._folder(item.record)
        save_png(item.pixels, folder / "input.png", (item.pictures or {}).get("input.png"))
        probabilities = item.probabilities
        top = probabilities.topk(min(TOP_K, probabilities.numel()))
        entry = self._entry(item.record.index)
        entry.update(
            status="ok",
            input=(folder / "input.png").relative_to(self.root).as_posix(),
            predictions=[{"index": int(i), "name": class_names[int(i)], "probability": round(float(p), 6)}
                         for p, i in zip(top.values, top.indices)],
            true_class=None if item.true_class is None else
            {"index": item.true_class, "name": class_names[item.true_class],
             "probability": round(float(probabilities[item.true_class]), 6)},
        )
        self._settle(item.record.index)

    def _result_entry(self, run: PluginRun, outcome: CallOutcome, folder: Path, base: np.ndarray | None) -> dict:
        result, seconds, error = outcome.result, outcome.seconds, outcome.error
        stats = self.stats[run.plugin.name]
        stats["seconds"] += seconds
        stats["calls"] += 1
        entry: dict = {"status": "ok" if error is None else "error", "seconds": round(seconds, 4),
                       "artifacts": [], "metrics": {}, "error": error, "traceback": outcome.traceback}
        if error is not None:
            stats["failures"] += 1
            return entry
        assert result is not None
        folder.mkdir(parents=True, exist_ok=True)
        encoded = outcome.pictures if outcome.pictures and len(outcome.pictures) == len(result.artifacts) else None
        for number, artifact in enumerate(result.artifacts):
            stem = f"{run.plugin.name}-{number}"
            saved = save_artifact(artifact, folder, stem, base, self.root, encoded[number] if encoded else None)
            if saved["kind"] == "scatter" and any(i is not None for i in saved["image_ids"]):
                saved["sprite"] = self._sprite(saved["image_ids"], folder / f"{stem}.sprite.png")
            entry["artifacts"].append(saved)
        entry["metrics"] = {k: float(v) for k, v in result.metrics.items()}
        if outcome.degenerate:
            entry["degenerate"] = list(outcome.degenerate)
        for key, value in entry["metrics"].items():
            self.metric_stats[run.plugin.name].setdefault(key, MetricStats()).add(value)
        return entry

    def _sprite(self, image_ids: list[int | None], path: Path) -> dict:
        """Thumbnails of a scatter's images in sprite sheets (nnvis_reports.assets.save_sprites)."""
        inputs = []
        for image_id in image_ids:
            entry = self._peek(image_id) if image_id is not None and 0 <= image_id < len(self.images) else None
            inputs.append(self.root / entry["input"] if entry and entry["input"] else None)
        saved = save_sprites(inputs, path)
        sheets = [sheet.relative_to(self.root).as_posix() for sheet in saved.pop("sheets")]
        return {"path": sheets[0], "sheets": sheets, **saved}

    def _add_image_artifacts(self, run: PluginRun, image_artifacts: dict) -> None:
        """A dataset plugin's per-image artifacts, written into each image's folder and section."""
        for image_id, artifacts in sorted(image_artifacts.items()):
            if not 0 <= image_id < len(self.images):
                continue
            entry = self.images[image_id]
            if entry["status"] != "ok":
                continue
            folder = self.assets / f"img-{image_id:05d}"
            saved = [save_artifact(artifact, folder, f"{run.plugin.name}-{number}", None, self.root)
                     for number, artifact in enumerate(artifacts)]
            entry["results"][run.plugin.name] = {
                "status": "ok", "seconds": 0.0, "artifacts": saved, "metrics": {}, "error": None, "traceback": None}
            self.images[image_id] = entry

    def _metrics_summary(self, name: str) -> dict:
        """Mean, spread and range of each metric a plugin reported, across the images."""
        return {key: stats.summary() for key, stats in self.metric_stats[name].items()}

    def add_image_result(self, item: ImageItem, run: PluginRun, outcome: CallOutcome) -> None:
        entry = self._result_entry(run, outcome, self._folder(item.record), item.pixels)
        self._entry(item.record.index)["results"][run.plugin.name] = entry
        self._settle(item.record.index)

    def add_global_result(self, run: PluginRun, outcome: CallOutcome) -> None:
        self.settle_all()
        folder = self.assets / f"{run.plugin.scope.value}-{run.plugin.name}"
        entry = self._result_entry(run, outcome, folder, None)
        if outcome.result is not None and outcome.result.image_artifacts:
            self._add_image_artifacts(run, outcome.result.image_artifacts)
        target = self.dataset_results if run.plugin.scope.value == "dataset" else self.model_results
        target[run.plugin.name] = entry

    def section(self) -> dict:
        """This model's entry of `by_model[]` (its images: the on-disk store)."""
        self.settle_all()
        plugins = []
        for run in self.runs:
            p = run.plugin
            plugins.append({
                "name": p.name, "title": p.title, "description": p.description, "scope": p.scope.value,
                "origin": run.origin, "params": dict(run.params), "attribution": isinstance(p, AttributionPlugin),
                "param_help": {param.name: param.help for param in p.params},
                "metrics_summary": self._metrics_summary(p.name),
                **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.stats[p.name].items()},
            })
        return {"model": self.model, "plugins": plugins, "skipped_plugins": self.skipped, "images": self.images,
                "dataset": self.dataset_results, "model_results": self.model_results}


class ReportWriter:
    """The whole report: one ModelSection per model, filled in turn as the core's run streams in."""

    def __init__(self, out_dir: Path, plan: RunPlan):
        self.root = out_dir
        self.started = datetime.now(timezone.utc)
        self.seed = plan.ctx.seed
        self.header = {
            "format": REPORT_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "input": {"root": str(plan.config.image_dir), "image_count": len(plan.records)},
            "engine": {"name": plan.config.engine, "workers": engine_workers(plan.config)},
            "load_failures": [vars(f) for f in plan.load_failures],
        }
        self.sections = [ModelSection(out_dir, plan)]

    def add_model(self, plan: RunPlan) -> None:
        """The next model's results follow."""
        self.sections.append(ModelSection(self.root, plan))

    def add_image(self, item: ImageItem) -> None:
        self.sections[-1].add_image(item)

    def add_unreadable(self, record: ImageRecord, reason: str) -> None:
        self.sections[-1].add_unreadable(record, reason)

    def add_image_result(self, item: ImageItem, run: PluginRun, outcome: CallOutcome) -> None:
        self.sections[-1].add_image_result(item, run, outcome)

    def add_global_result(self, run: PluginRun, outcome: CallOutcome) -> None:
        self.sections[-1].add_global_result(run, outcome)

    def report(self, timing: dict | None = None) -> dict:
        """report.json's content; each model's `images` is its ImageStore, read like a list.
        `timing`: the run's own, when it ran before this writer (nnvis_core.run.sink.MemorySink)."""
        finished = datetime.now(timezone.utc)
        sections = [section.section() for section in self.sections]
        for section, label in zip(sections, model_labels([section["model"] for section in sections])):
            section["model"]["label"] = label
        readable = sum(1 for e in sections[0]["images"] if e["status"] == "ok")
        report = {
            **self.header,
            "input": {**self.header["input"], "readable": readable,
                      "unreadable": len(sections[0]["images"]) - readable},
            "models": [section["model"] for section in sections],
            "versions": _versions(),
            "seed": self.seed,
            "timing": timing or {"started": self.started.isoformat(timespec="seconds"),
                                 "seconds": round((finished - self.started).total_seconds(), 3)},
            "by_model": sections,
        }
        report["leaderboard"] = [row for k in range(len(sections)) for row in leaderboard(model_view(report, k))]
        return report

    def finish(self, timing: dict | None = None) -> None:
        """Write report.json and index.html, each streamed to its file."""
        from nnvis_reports.render import write_html

        report = self.report(timing)
        write_report_json(report, self.root / "report.json")
        write_html(report, self.root / "index.html")
        self.close()

    def close(self) -> None:
        """Let go of the image stores' temporary files."""
        for section in self.sections:
            section.images.close()


def write_report_json(report: dict, path: Path) -> None:
    """report.json, each model's images streamed one entry a line (from their store, undecoded)."""
    marker = "@nnvis images of model {}@"
    shallow = {**report, "by_model": [{**section, "images": marker.format(k)}
                                      for k, section in enumerate(report["by_model"])]}
    text = json.dumps(shallow, indent=1, ensure_ascii=False)
    with open(path, "w", encoding="utf-8") as out:
        for k, section in enumerate(report["by_model"]):
            before, text = text.split(json.dumps(marker.format(k)), 1)
            out.write(before)
            out.writelines(images_json(section["images"]))
        out.write(text)
