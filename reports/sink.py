"""The HTML report as a sink of the core's run: OUT/index.html, report.json and assets/.

The core (nnvis_core.runner) owns the run and calls this sink as results
arrive; the sink stages the report beside OUT, keeps the result cache in the
same work folder (so an interrupted run can be resumed), and moves the finished
report into place (nnvis_reports.output). It is registered as the sink `html`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from nnvis_core.contract.context import ImageItem
from nnvis_core.contract.plugin import hookimpl
from nnvis_core.images import ImageRecord
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.plan import CallOutcome, PluginRun, RunOutcome, RunPlan, UsageError
from nnvis_core.run.registry import Registry
from nnvis_core.run.sink import SinkFactory
from nnvis_core.runner import run
from nnvis_reports.assets import PictureEncoder
from nnvis_reports.output import OutputError, OutputFolder
from nnvis_reports.writer import ReportWriter


class HtmlReport:
    """One run's report at `out_dir` (see nnvis_core.run.sink.Sink for the order of calls)."""

    def __init__(self, out_dir: Path, force: bool = False, log: Callable[[str], None] = lambda line: None) -> None:
        self.out_dir = Path(out_dir)
        self.force = force
        self.log = log
        self.output: OutputFolder | None = None
        self.writer: ReportWriter | None = None
        self.encoder = PictureEncoder()  # an engine may encode the pictures where the images are computed

    def begin(self, plan: RunPlan) -> Path:
        if self.writer is not None and self.output is not None:  # the next model of the run
            self.writer.add_model(plan)
            return self.output.cache_dir
        try:
            output = OutputFolder(self.out_dir, self.force)
            output.check()
            staging = output.begin(plan.config.resume, self.log)
        except OutputError as error:
            raise UsageError(str(error)) from None
        self.output = output
        self.writer = ReportWriter(staging, plan)
        return output.cache_dir

    def _writer(self) -> ReportWriter:
        if self.writer is None:
            raise RuntimeError("HtmlReport.begin() was not called")
        return self.writer

    def add_image(self, item: ImageItem) -> None:
        self._writer().add_image(item)

    def add_unreadable(self, record: ImageRecord, reason: str) -> None:
        self._writer().add_unreadable(record, reason)

    def add_image_result(self, item: ImageItem, run: PluginRun, outcome: CallOutcome) -> None:
        self._writer().add_image_result(item, run, outcome)

    def add_global_result(self, run: PluginRun, outcome: CallOutcome) -> None:
        self._writer().add_global_result(run, outcome)

    def finish(self, outcome: RunOutcome) -> None:
        self._writer().finish(outcome.timing)
        assert self.output is not None
        self.output.commit(keep_cache=outcome.failed_calls > 0)  # --resume then retries only those

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.output is not None:
            self.output.release()  # after a failure the work folder stays, for --resume


class HtmlReportFactory(SinkFactory):
    name = "html"
    description = "a static HTML report (index.html, report.json, assets/) at the output folder"

    def create(self, config: ReportConfig, log: Callable[[str], None] = lambda line: None) -> HtmlReport:
        return HtmlReport(config.out_dir, config.force, log)


@hookimpl
def nnvis_register_sinks(register) -> None:
    register(HtmlReportFactory())


def build_report(
    config: ReportConfig,
    registry: Registry,
    progress: Callable[[int, Callable[[], str]], Callable[[int], None]] | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> RunOutcome:
    """The core's run (nnvis_core.runner.run) into an HTML report at config.out_dir."""
    return run(config, registry, HtmlReport(config.out_dir, config.force, log), progress, log)
