"""Where a run's results go: the small protocol the core emits to, and an in-memory sink.

The core owns the run (nnvis_core.runner) and calls a sink as results arrive,
the way pytest's runner hands reports to its terminal reporter: the sink only
consumes. The HTML report is one sink (nnvis_reports registers it through the
`nnvis_register_sinks` hook); :class:`MemorySink` keeps everything in memory,
for tests and for code that wants the results rather than a page.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol

from nnvis_core.contract.context import ImageItem
from nnvis_core.images import ImageRecord
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.plan import CallOutcome, PluginRun, RunOutcome, RunPlan


class Sink(Protocol):
    """Receives one run's results. For each of the run's models in turn the core calls
    `begin` with that model's plan, then the `add_*` methods in stream order for that
    model; at the end `finish` (only when the run completed) and always `close`."""

    def begin(self, plan: RunPlan) -> Path | None:
        """Prepare for a model's results (`plan.model_index` of `plan.model_count`; the first
        call prepares the whole run). Return a folder where results may be cached for
        --resume, or None.

        Raise nnvis_core.run.plan.UsageError for a destination that cannot be written; a sink
        that shows only one model raises it when `plan.model_count` > 1.
        """

    def add_image(self, item: ImageItem) -> None:
        """A readable image, before its image-scope results."""

    def add_unreadable(self, record: ImageRecord, reason: str) -> None:
        """An image that could not be read (reason is one line)."""

    def add_image_result(self, item: ImageItem, run: PluginRun, outcome: CallOutcome) -> None:
        """One image-scope plugin call on `item`."""

    def add_global_result(self, run: PluginRun, outcome: CallOutcome) -> None:
        """The one call of a dataset- or model-scope plugin."""

    def finish(self, outcome: RunOutcome) -> None:
        """Every call is done: write what the sink writes."""

    def close(self) -> None:
        """Release what begin took, whether or not the run finished."""


class PictureEncoder(Protocol):
    """A sink's picture encoding, which an engine may run where the images are computed (the Ray
    engine's workers) so that the driver only writes finished files. A sink that has one sets
    `encoder`; it must be picklable and pure (no files), and the sink must write the same files
    with or without it."""

    def encode_item(self, item: ImageItem) -> dict[str, bytes]:
        """The files for the image itself (its input picture), by name."""

    def encode_result(self, item: ImageItem, outcome: CallOutcome) -> tuple[dict[str, bytes] | None, ...]:
        """Per artifact of the outcome's result, its files by name (None where the sink encodes it)."""


def encoder_of(sink: Any) -> PictureEncoder | None:
    return getattr(sink, "encoder", None)


class SinkFactory:
    """A registered kind of sink (`nnvis_register_sinks`): makes the sink for one run's settings."""

    name: str
    description: str

    def create(self, config: ReportConfig, log: Callable[[str], None] = lambda line: None) -> Sink:
        """The sink for one run; `log` takes one-line messages for the user."""
        raise NotImplementedError


def check_sink_factory(factory: Any) -> None:
    if not isinstance(factory, SinkFactory):
        raise ValueError(f"{factory!r} is not an instance of nnvis_core.run.sink.SinkFactory")
    if not getattr(factory, "name", ""):
        raise ValueError(f"sink {factory!r} needs a name")


@dataclass
class ModelResults:
    """One model's results in a MemorySink: `images[relpath][plugin]` and `global_results[plugin]`."""

    plan: RunPlan
    items: list[ImageItem] = field(default_factory=list)
    images: dict[str, dict[str, CallOutcome]] = field(default_factory=dict)
    global_results: dict[str, CallOutcome] = field(default_factory=dict)

    def outcomes(self, plugin: str) -> dict[str | None, CallOutcome]:
        """Every call of one plugin: by image path, or None for its dataset/model call."""
        found: dict[str | None, CallOutcome] = {
            path: results[plugin] for path, results in self.images.items() if plugin in results}
        if plugin in self.global_results:
            found[None] = self.global_results[plugin]
        return found


@dataclass
class MemorySink:
    """Keeps every result in memory, per model (`models`); `plan`, `items`, `images`,
    `global_results` and `outcomes` are the first model's: the only one of most runs."""

    models: list[ModelResults] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    outcome: RunOutcome | None = None
    closed: bool = False
    # Where results are kept across runs (nnvis_core.run.cache): a result computed before for the same
    # inputs is taken from there. None: every result is computed.
    cache_dir: Path | None = None
    # The run's real timing ({"started": ISO 8601, "seconds": wall time}), which `replay` hands on:
    # a report written later from memory names the run's time, not its own.
    timing: dict | None = None

    def begin(self, plan: RunPlan) -> Path | None:
        self.models.append(ModelResults(plan))
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        return self.cache_dir

    @property
    def _current(self) -> ModelResults:
        return self.models[-1]

    @property
    def plan(self) -> RunPlan | None:
        return self.models[0].plan if self.models else None

    @property
    def items(self) -> list[ImageItem]:
        return self.models[0].items if self.models else []

    @property
    def images(self) -> dict[str, dict[str, CallOutcome]]:
        return self.models[0].images if self.models else {}

    @property
    def global_results(self) -> dict[str, CallOutcome]:
        return self.models[0].global_results if self.models else {}

    def add_image(self, item: ImageItem) -> None:
        self._current.items.append(item)
        self._current.images[item.record.relpath] = {}

    def add_unreadable(self, record: ImageRecord, reason: str) -> None:
        self.unreadable[record.relpath] = reason

    def add_image_result(self, item: ImageItem, run: PluginRun, outcome: CallOutcome) -> None:
        self._current.images[item.record.relpath][run.plugin.name] = outcome

    def add_global_result(self, run: PluginRun, outcome: CallOutcome) -> None:
        self._current.global_results[run.plugin.name] = outcome

    def finish(self, outcome: RunOutcome) -> None:
        self.outcome = outcome

    def close(self) -> None:
        self.closed = True

    def outcomes(self, plugin: str) -> dict[str | None, CallOutcome]:
        """The first model's calls of one plugin: by image path, or None for its dataset/model call."""
        return self.models[0].outcomes(plugin) if self.models else {}

    def replay(self, sink: Sink) -> RunOutcome:
        """Emit everything kept here to `sink`, in the order the core emits a run (model by model,
        images in walk order): the report a run into `sink` would have written. The sink's cache
        folder is not used: nothing is computed again."""
        if self.outcome is None:
            raise RuntimeError("MemorySink.replay: the run did not finish")
        try:
            for kept in self.models:
                plan = kept.plan
                sink.begin(plan)
                items = {item.record.relpath: item for item in kept.items}
                for record in plan.records:
                    if record.relpath in self.unreadable:
                        sink.add_unreadable(record, self.unreadable[record.relpath])
                        continue
                    item = items[record.relpath]
                    sink.add_image(item)
                    for run in plan.image_runs:
                        if run.plugin.name in kept.images[record.relpath]:
                            sink.add_image_result(item, run, kept.images[record.relpath][run.plugin.name])
                for run in plan.runs:
                    if run.plugin.name in kept.global_results:
                        sink.add_global_result(run, kept.global_results[run.plugin.name])
            sink.finish(replace(self.outcome, timing=self.timing) if self.timing else self.outcome)
        finally:
            sink.close()
        return self.outcome

