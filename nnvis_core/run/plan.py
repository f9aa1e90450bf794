"""The typed values a run passes around: what to run, what one call gave, how the run ended."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from nnvis_core.contract.artifacts import Result
from nnvis_core.contract.context import RunContext
from nnvis_core.contract.plugin import Plugin, Scope
from nnvis_core.images import ImageRecord
from nnvis_core.run.config import ReportConfig


class UsageError(Exception):
    """Bad options or inputs found before any work: exit code 2, one line."""


@dataclass
class PluginRun:
    """One selected plugin with its resolved parameters."""

    plugin: Plugin
    params: dict
    origin: str
    time_limit: float | None = None  # seconds per call; None: no limit
    stuck: bool = False  # a call ran past the limit and could not be stopped: skip the rest


@dataclass(frozen=True)
class CallOutcome:
    """What one plugin call gave: a Result, or an error line with the plugin's traceback."""

    result: Result | None
    seconds: float
    error: str | None = None
    traceback: str | None = None
    # Per artifact, the sink's files for it already encoded where the call ran (a Ray worker), or None.
    pictures: tuple[dict[str, bytes] | None, ...] | None = None
    # Why the result shows nothing though it passed every check (conformance.degenerate_reasons).
    degenerate: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None and self.result is not None


Outcomes = Iterable[tuple[PluginRun, CallOutcome]]  # an image's outcomes, as an engine yields them
Unreadable = Callable[[ImageRecord, str], None]  # what an engine calls for an image it cannot read


@dataclass(frozen=True)
class SkippedPlugin:
    """A plugin `--plugins all` left out because it does not apply to the model, or (`needs_layer`)
    because it finds no layer to read by default: naming one may make it run."""

    name: str
    reason: str
    needs_layer: bool = False


@dataclass
class RunPlan:
    """A run that passed every usage check: what to run, on which images, with which model."""

    config: ReportConfig
    runs: list[PluginRun]
    records: list[ImageRecord]
    ctx: RunContext
    load_failures: list[Any] = field(default_factory=list)  # registry.LoadFailure: plugins that did not load
    skipped: list[SkippedPlugin] = field(default_factory=list)
    model_index: int = 0  # this plan's model among the run's models (config.models)
    model_count: int = 1

    @property
    def image_runs(self) -> list[PluginRun]:
        return [r for r in self.runs if r.plugin.scope is Scope.IMAGE]

    @property
    def steps(self) -> int:
        """Units of progress: one per image and image-scope plugin, one per other plugin."""
        per_image = len(self.image_runs)
        return len(self.records) * max(1, per_image) + (len(self.runs) - per_image)


@dataclass
class RunOutcome:
    out_dir: Path
    failed_images: int
    failed_calls: int
    reused: int = 0  # results taken from the cache of an interrupted run
    # When the run started (ISO 8601) and its wall time in seconds, where a sink that writes later
    # (MemorySink.replay) must not time itself: {"started": ..., "seconds": ...}; None: the sink times.
    timing: dict | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.failed_images or self.failed_calls else 0
